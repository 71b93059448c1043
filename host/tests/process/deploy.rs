//! The deployment files against the code and against each other: `deploy/k8s` (Kubernetes),
//! `deploy/systemd` (one host) and the `Containerfile` (which cannot be built here: no
//! container engine, so its facts are checked statically).
//!
//! - The manifests pass `kubernetes-validate --strict` (offline, bundled schemas) for the
//!   Kubernetes versions in [`KUBERNETES_VERSIONS`]; kustomization.yaml lists them.
//! - The ConfigMap's TOML goes through the service's own loader and names a non-open
//!   authentication mode; container ports, probes, Services, scrape annotations, mounts and
//!   the image's paths agree with it.
//! - `terminationGracePeriodSeconds` and systemd's `TimeoutStopSec` exceed the code's bound on
//!   the shutdown sequence (`Config::stop_bound`, computed from each file's own configuration);
//!   the probes fit the pre-stop delay and the drain; the memory limits fit SECURITY.md's bound.
//! - The image: builder Rust version, plugin artifact, numeric non-root user equal to the pods'
//!   `runAsUser`, ports, name and tag.
//! - Every Secret key referenced exists in the example Secret; every environment variable set
//!   is one the service reads (the binary's own `--help`, the OpenTelemetry variables) or only
//!   feeds another one through `$(VAR)`.
//! - The migration Job's and the Deployment's containers run with their environment (example
//!   secrets, a real PostgreSQL database, the ConfigMap as `WEIR_CONFIG`): migrate exits 0,
//!   serve starts, its probe and scrape paths answer 200 and the API demands a credential.
//! - `systemd-analyze verify` and `systemd-analyze security --offline` accept the unit; `weir
//!   serve` with the unit's configuration, run under strace while it serves an order, uses only
//!   system calls of its `SystemCallFilter`, address families of its `RestrictAddressFamilies`,
//!   writes only under its state directory, and maps JIT code executable (why the unit must
//!   not set `MemoryDenyWriteExecute`).
//!
//! External tools: `kubernetes-validate` (`$WEIR_KUBERNETES_VALIDATE`, else
//! `target/venv-kubernetes-validate/bin/kubernetes-validate`, installed by `.ci/run`),
//! `systemd-analyze` and `strace`. With `CI=true` a missing tool fails its test; elsewhere the
//! test is skipped with a note.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::{Value, json};
use weir_host::auth::AuthMode;
use weir_host::server::config::{Config, Overrides};
use weir_host::storage::testing::PgTestDb;

use crate::support::{POLL, WAIT, Weir, client, order_body, weir_command};

/// Kubernetes versions the manifests are validated against: the oldest supported here and
/// the newest schema kubernetes-validate bundles.
const KUBERNETES_VERSIONS: &[&str] = &["1.32.0", "1.37.0"];

/// Time an orchestrator's kill timeout must leave beyond `Config::stop_bound` (closing the
/// database pool, which has no bound of its own, and the process exit).
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// SECURITY.md 3.2: `RSS <= baseline + max_instances x (memory_bytes + copy_bytes + 2 x
/// stdio_bytes + log_bytes) + allowance`. The measured baseline is ~70 MiB; this allows for
/// more (a bigger catalog cache, OTLP batches).
const PROCESS_BASELINE: u64 = 128 << 20;
/// SECURITY.md 3.2's allowance for request handling and allocator slack.
const MEMORY_ALLOWANCE: u64 = 64 << 20;

/// The standard OpenTelemetry variables the SDK reads (RUNBOOK "Telemetry").
const OTEL_VARIABLES: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
];

// ---------------------------------------------------------------------------------------------
// Files

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every non-empty document of a YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The manifest files of deploy/k8s (every `*.yaml` but kustomization.yaml), sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/k8s");
    files
}

/// Every object of deploy/k8s with its file name.
fn manifests() -> Vec<(String, Value)> {
    manifest_files()
        .iter()
        .flat_map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            yaml_documents(path)
                .into_iter()
                .map(move |v| (file.clone(), v))
        })
        .collect()
}

/// The one object of `kind` named `name` in deploy/k8s.
fn object(kind: &str, name: &str) -> Value {
    let found: Vec<Value> = manifests()
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} {name} in deploy/k8s"
    );
    found.into_iter().next().unwrap()
}

fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {}", v["metadata"]["name"]))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer)
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string"))
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    at(v, pointer)
        .as_u64()
        .unwrap_or_else(|| panic!("{pointer} is not a number"))
}

/// The one container of a workload's pod template.
fn only_container(workload: &Value) -> &Value {
    let containers = at(workload, "/spec/template/spec/containers")
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// A container port given by number or name, as a number.
fn port_number(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port is a number or a name");
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// Load `toml` through the service's own loader (as `--config FILE`).
fn load_config(toml: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(&Overrides {
        config_file: Some(path),
        ..Overrides::default()
    })
    .map_err(|e| e.to_string())
}

/// The ConfigMap's `weir.toml`.
fn configmap_toml() -> String {
    str_at(&object("ConfigMap", "weir-config"), "/data/weir.toml").to_owned()
}

fn configmap_config() -> Config {
    load_config(&configmap_toml())
        .unwrap_or_else(|e| panic!("the service refuses the ConfigMap's weir.toml: {e}"))
}

/// SECURITY.md 3.2's memory bound for `config`.
fn memory_bound(config: &Config) -> u64 {
    let b = &config.runtime.budget;
    let per_call = (b.memory_bytes + b.copy_bytes + 2 * b.stdio_bytes + b.log_bytes) as u64;
    PROCESS_BASELINE + u64::from(config.runtime.max_instances) * per_call + MEMORY_ALLOWANCE
}

/// A Kubernetes memory quantity (`768Mi`, `1Gi`, `1G`, bytes) in bytes.
fn k8s_bytes(q: &str) -> u64 {
    let (digits, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        other => panic!("unit {other} of {q}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

/// Whether a missing tool fails (CI) or skips.
fn missing_tool(tool: &str, how: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!ci, "CI=true but {tool} is not available: {how}");
    eprintln!("SKIPPED: {tool} is not available ({how})");
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

fn kubernetes_validate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEIR_KUBERNETES_VALIDATE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let venv = root().join("target/venv-kubernetes-validate/bin/kubernetes-validate");
    venv.exists().then_some(venv)
}

// ---------------------------------------------------------------------------------------------
// The environment of a container

/// One `env` entry: its name and where its value comes from.
#[derive(Debug, Clone)]
enum EnvValue {
    Literal(String),
    Secret {
        name: String,
        key: String,
        optional: bool,
    },
    Field(String),
}

fn env_entries(container: &Value) -> Vec<(String, EnvValue)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                EnvValue::Literal(v.to_owned())
            } else if let Some(s) = e.pointer("/valueFrom/secretKeyRef") {
                EnvValue::Secret {
                    name: s["name"].as_str().expect("secret name").to_owned(),
                    key: s["key"].as_str().expect("secret key").to_owned(),
                    optional: s["optional"].as_bool().unwrap_or(false),
                }
            } else if let Some(f) = e.pointer("/valueFrom/fieldRef/fieldPath") {
                EnvValue::Field(f.as_str().expect("fieldPath").to_owned())
            } else {
                panic!("env {name}: only value, secretKeyRef and fieldRef are used here: {e}")
            };
            (name, value)
        })
        .collect()
}

/// The example Secret's values by key.
fn example_secret() -> (String, BTreeMap<String, String>) {
    let docs = yaml_documents(&root().join("deploy/k8s/secret.example.yaml"));
    assert_eq!(docs.len(), 1, "secret.example.yaml holds one Secret");
    let secret = &docs[0];
    assert_eq!(secret["kind"], "Secret");
    let values = secret["stringData"]
        .as_object()
        .expect("the example Secret uses stringData")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect();
    (str_at(secret, "/metadata/name").to_owned(), values)
}

/// The environment the container gets, with the example Secret's values, placeholders for
/// field references, and `$(VAR)` references expanded (as the kubelet does).
fn resolved_env(container: &Value) -> Vec<(String, String)> {
    let (_, secret) = example_secret();
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in env_entries(container) {
        let mut value = match value {
            EnvValue::Literal(v) => v,
            EnvValue::Secret { key, .. } => secret
                .get(&key)
                .unwrap_or_else(|| panic!("{name}: no key {key} in the example Secret"))
                .clone(),
            EnvValue::Field(path) => format!("field-{}", path.replace('.', "-")),
        };
        for (earlier, v) in &out {
            value = value.replace(&format!("$({earlier})"), v);
        }
        out.push((name, value));
    }
    out
}

/// The variables `weir` reads through its flags: every `[env: NAME` of `weir serve --help`
/// and `weir migrate --help` (the real binary), plus `RUST_LOG`.
fn flag_variables() -> BTreeSet<String> {
    let mut vars = BTreeSet::from(["RUST_LOG".to_owned()]);
    for sub in ["serve", "migrate"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([sub, "--help"])
            .output()
            .expect("run weir --help");
        assert!(out.status.success(), "weir {sub} --help: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for part in help.split("[env: ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            vars.insert(name);
        }
    }
    for expected in [
        "WEIR_CONFIG",
        "DATABASE_URL",
        "WEIR_ADMIN_TOKEN",
        "AMQP_URL",
    ] {
        assert!(
            vars.contains(expected),
            "`weir serve --help` no longer names {expected}: {vars:?}"
        );
    }
    vars
}

/// Variables of `names` (with their values) that the service does not read: not a flag's
/// variable, not `WEIR__SECTION__KEY`, not a standard OpenTelemetry variable, and not used
/// through `$(NAME)` by another of `values`.
fn unread_variables(names: &[String], values: &[String]) -> Vec<String> {
    let read = flag_variables();
    names
        .iter()
        .filter(|name| {
            !(read.contains(name.as_str())
                || name.starts_with("WEIR__")
                || OTEL_VARIABLES.contains(&name.as_str())
                || values.iter().any(|v| v.contains(&format!("$({name})"))))
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

#[test]
fn the_manifests_pass_kubernetes_validate_strict_and_kustomization_lists_them() {
    // kustomization.yaml: every manifest except the example Secret and the Job, which are
    // applied separately (RUNBOOK).
    let kustomization = &yaml_documents(&root().join("deploy/k8s/kustomization.yaml"))[0];
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let files: BTreeSet<String> = manifest_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<&str> = files
        .iter()
        .map(String::as_str)
        .filter(|f| !["secret.example.yaml", "migrate-job.yaml"].contains(f))
        .collect();
    assert_eq!(
        listed, expected,
        "kustomization.yaml must list every manifest but secret.example.yaml and migrate-job.yaml"
    );
    // Every namespaced object lives in the `weir` namespace.
    for (file, v) in manifests() {
        if v["kind"] != "Namespace" {
            assert_eq!(v["metadata"]["namespace"], "weir", "{file}: {}", v["kind"]);
        }
    }

    let Some(tool) = kubernetes_validate() else {
        missing_tool(
            "kubernetes-validate",
            "python3 -m venv target/venv-kubernetes-validate && \
             target/venv-kubernetes-validate/bin/pip install kubernetes-validate, or set \
             WEIR_KUBERNETES_VALIDATE; .ci/run does this",
        );
        return;
    };
    let mut cmd = std::process::Command::new(&tool);
    cmd.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        cmd.args(["--kubernetes-version", version]);
    }
    cmd.args(manifest_files());
    let out = cmd.output().expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{stdout}{stderr}"
    );
    // An unknown kind or apiVersion is only a warning to the tool (exit 0): here every object
    // must have been validated against every version.
    let passed = stdout
        .lines()
        .filter(|l| l.contains(" passed for "))
        .count();
    let objects = manifests().len();
    assert_eq!(
        passed,
        objects * KUBERNETES_VERSIONS.len(),
        "not every object was validated ({objects} objects x {} versions):\n{stdout}{stderr}",
        KUBERNETES_VERSIONS.len()
    );
    assert!(
        !stdout.contains("WARN") && !stdout.contains("ERROR"),
        "{stdout}"
    );
}

#[test]
fn the_configmap_is_accepted_by_the_service_and_matches_ports_probes_and_paths() {
    let config = configmap_config();
    // A non-loopback API needs a real authentication mode (the loader enforced it too).
    assert!(
        matches!(config.auth.mode, Some(AuthMode::ApiKeys | AuthMode::Jwt)),
        "the ConfigMap must name auth.mode api_keys or jwt, not {:?}",
        config.auth.mode
    );
    assert!(
        config.listen.ip().is_unspecified() && config.ops_listen.ip().is_unspecified(),
        "both listeners must bind every interface of the pod: {} / {}",
        config.listen,
        config.ops_listen
    );
    let api_port = u64::from(config.listen.port());
    let ops_port = u64::from(config.ops_listen.port());

    let deployment = object("Deployment", "weir");
    let container = only_container(&deployment);
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("named port"),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([("http", api_port), ("ops", ops_port)]),
        "container ports must be listen and ops_listen of the ConfigMap"
    );

    // Probes: the operations listener's health routes (the start-up test below GETs them).
    for (probe, path) in [
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert_eq!(
            port_number(container, &get["port"]),
            ops_port,
            "{probe} must probe the operations port"
        );
    }

    // Services: the API and the operations port, selecting the Deployment's pods.
    let pod_labels = at(&deployment, "/spec/template/metadata/labels");
    for (service, port) in [("weir", api_port), ("weir-ops", ops_port)] {
        let svc = object("Service", service);
        let svc_ports = at(&svc, "/spec/ports").as_array().unwrap();
        assert_eq!(svc_ports.len(), 1, "{service}: one port");
        assert_eq!(
            port_number(container, &svc_ports[0]["targetPort"]),
            port,
            "Service {service} targets the wrong container port"
        );
        for (k, v) in at(&svc, "/spec/selector").as_object().unwrap() {
            assert_eq!(&pod_labels[k], v, "Service {service} selects {k}={v}");
        }
    }
    assert_eq!(
        at(&deployment, "/spec/selector/matchLabels"),
        at(
            &object("PodDisruptionBudget", "weir"),
            "/spec/selector/matchLabels"
        ),
        "the PDB must select the Deployment's pods"
    );

    // Prometheus: the pods' scrape annotations name the operations port and /metrics.
    let annotations = at(&deployment, "/spec/template/metadata/annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], ops_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // WEIR_CONFIG is the ConfigMap's key where its volume is mounted.
    let env: BTreeMap<String, EnvValue> = env_entries(container).into_iter().collect();
    let Some(EnvValue::Literal(weir_config)) = env.get("WEIR_CONFIG") else {
        panic!("the Deployment must set WEIR_CONFIG");
    };
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = at(&deployment, "/spec/template/spec/volumes")
        .as_array()
        .unwrap();
    let mount_of = |volume: &Value| -> String {
        let name = &volume["name"];
        mounts
            .iter()
            .find(|m| &m["name"] == name)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("volume {name} is not mounted"))
            .to_owned()
    };
    let config_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == "weir-config")
        .expect("a volume of the weir-config ConfigMap");
    assert_eq!(
        *weir_config,
        format!("{}/weir.toml", mount_of(config_volume)),
        "WEIR_CONFIG must be the ConfigMap's weir.toml where it is mounted"
    );
    // data_dir is a writable emptyDir (the root filesystem is read-only).
    let data = volumes
        .iter()
        .find(|v| mount_of(v) == config.data_dir.to_string_lossy())
        .unwrap_or_else(|| {
            panic!(
                "nothing is mounted at data_dir {}",
                config.data_dir.display()
            )
        });
    assert!(
        data.get("emptyDir").is_some(),
        "data_dir must be an emptyDir: {data}"
    );
}

#[test]
fn the_grace_period_exceeds_the_shutdown_bound_and_the_probes_fit_the_drain() {
    let config = configmap_config();
    let deployment = object("Deployment", "weir");
    let pod = at(&deployment, "/spec/template/spec");
    let container = only_container(&deployment);
    let shutdown = &config.shutdown;

    // Endpoints take time to update: the service's own pre-stop delay covers it, and it is the
    // only pre-stop wait (a preStop sleep hook would add to it; the image has no shell for an
    // exec hook).
    assert!(
        container.pointer("/lifecycle/preStop").is_none(),
        "a preStop hook doubles shutdown.pre_stop_delay_ms ({:?}); use one or the other",
        shutdown.pre_stop_delay
    );
    assert!(
        !shutdown.pre_stop_delay.is_zero(),
        "set shutdown.pre_stop_delay_ms in the ConfigMap: endpoints take time to update"
    );
    // Load balancers that follow readiness notice within period x threshold.
    let readiness = &container["readinessProbe"];
    let noticed = Duration::from_secs(
        u64_at(readiness, "/periodSeconds") * u64_at(readiness, "/failureThreshold"),
    );
    assert!(
        shutdown.pre_stop_delay >= noticed,
        "pre_stop_delay {:?} < readiness period x failureThreshold {noticed:?}",
        shutdown.pre_stop_delay
    );
    // A request admitted at the end of the pre-stop delay can still finish before the deadline.
    assert!(
        shutdown.drain_deadline >= shutdown.pre_stop_delay + config.http.request_timeout,
        "drain_deadline {:?} leaves less than http.request_timeout {:?} after the pre-stop delay",
        shutdown.drain_deadline,
        config.http.request_timeout
    );

    // The kill timeout exceeds the whole sequence's worst case, with a margin.
    let grace = Duration::from_secs(u64_at(pod, "/terminationGracePeriodSeconds"));
    let bound = config.stop_bound();
    assert!(
        grace >= bound + STOP_MARGIN,
        "terminationGracePeriodSeconds {grace:?} < the shutdown bound {bound:?} (drain {:?} + \
         telemetry flush {:?}) + margin {STOP_MARGIN:?}",
        shutdown.drain_bound(),
        config.telemetry.flush_bound()
    );

    // Liveness cannot kill a draining pod: its listeners close after the pre-stop delay and it
    // may take the rest of the bound to exit.
    let liveness = &container["livenessProbe"];
    let kills_after = Duration::from_secs(
        u64_at(liveness, "/periodSeconds") * u64_at(liveness, "/failureThreshold"),
    );
    assert!(
        kills_after > bound - shutdown.pre_stop_delay,
        "liveness fails after {kills_after:?}, within the {:?} a drain runs with closed listeners",
        bound - shutdown.pre_stop_delay
    );

    // Memory: the limit holds SECURITY.md's bound for the ConfigMap's runtime settings.
    let limit = k8s_bytes(str_at(container, "/resources/limits/memory"));
    let request = k8s_bytes(str_at(container, "/resources/requests/memory"));
    let needed = memory_bound(&config);
    assert!(
        limit >= needed && request <= limit,
        "memory limit {} MiB (request {} MiB) below the bound {} MiB",
        limit >> 20,
        request >> 20,
        needed >> 20
    );
    assert!(container.pointer("/resources/requests/cpu").is_some());
    assert!(container.pointer("/resources/limits/cpu").is_some());

    // Replicas: several, HPA and PDB consistent, connections within PostgreSQL's default.
    let hpa = object("HorizontalPodAutoscaler", "weir");
    assert_eq!(str_at(&hpa, "/spec/scaleTargetRef/kind"), "Deployment");
    assert_eq!(str_at(&hpa, "/spec/scaleTargetRef/name"), "weir");
    let min = u64_at(&hpa, "/spec/minReplicas");
    let max = u64_at(&hpa, "/spec/maxReplicas");
    assert_eq!(
        u64_at(&deployment, "/spec/replicas"),
        min,
        "the Deployment's replicas must be the HPA's minReplicas"
    );
    let pdb = object("PodDisruptionBudget", "weir");
    let unavailable = u64_at(&pdb, "/spec/maxUnavailable");
    assert!(
        min >= 3 && unavailable >= 1 && min - unavailable >= 2,
        "replicas {min}, PDB maxUnavailable {unavailable}: a drain must leave two serving"
    );
    assert!(
        max * u64::from(config.database.max_connections) <= 90,
        "{max} replicas x database.max_connections {} exceeds PostgreSQL's default 100 \
         connections less room for the Job and operators",
        config.database.max_connections
    );
}

/// The port of a URL (`scheme://user:pass@host:PORT/...`).
fn url_port(url: &str) -> u64 {
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    let host_port = authority.rsplit('@').next().unwrap();
    host_port
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{url} names no port"))
}

/// `(port, protocol)` of every egress rule of a policy, with the rule's `to` (empty: any).
fn egress(policy: &Value) -> Vec<(u64, String, Value)> {
    at(policy, "/spec/egress")
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            let to = rule.get("to").cloned().unwrap_or(json!([]));
            rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |p| {
                    (
                        p["port"].as_u64().expect("numeric egress port"),
                        p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                        to.clone(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_network_policies_admit_what_the_service_uses_and_no_more() {
    let config = configmap_config();
    let deployment = object("Deployment", "weir");
    let container = only_container(&deployment);
    let pod_labels = at(&deployment, "/spec/template/metadata/labels");
    let job = object("Job", "weir-migrate");
    let job_labels = at(&job, "/spec/template/metadata/labels");
    let selects = |policy: &Value, labels: &Value| {
        at(policy, "/spec/podSelector/matchLabels")
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };

    // Default deny for the namespace.
    let deny = object("NetworkPolicy", "weir-default-deny");
    assert_eq!(at(&deny, "/spec/podSelector"), &json!({}));
    assert_eq!(
        at(&deny, "/spec/policyTypes"),
        &json!(["Ingress", "Egress"])
    );
    assert!(deny["spec"].get("ingress").is_none() && deny["spec"].get("egress").is_none());

    let policy = object("NetworkPolicy", "weir");
    assert!(
        selects(&policy, pod_labels),
        "the weir policy must select the pods"
    );
    assert!(
        !selects(&policy, job_labels),
        "the weir policy must not select the Job"
    );
    // Ingress: the API from anywhere, the operations port from `monitoring` only.
    let mut ingress: BTreeMap<u64, Value> = BTreeMap::new();
    for rule in at(&policy, "/spec/ingress").as_array().unwrap() {
        for port in rule["ports"].as_array().expect("ingress rules name ports") {
            let number = port_number(container, &port["port"]);
            assert!(
                ingress
                    .insert(number, rule.get("from").cloned().unwrap_or(Value::Null))
                    .is_none(),
                "port {number} admitted twice"
            );
        }
    }
    assert_eq!(
        ingress.keys().copied().collect::<Vec<_>>(),
        vec![
            u64::from(config.listen.port()),
            u64::from(config.ops_listen.port())
        ],
        "ingress must admit exactly the API and operations ports"
    );
    assert_eq!(
        ingress[&u64::from(config.listen.port())],
        Value::Null,
        "the API is reachable from anywhere"
    );
    assert_eq!(
        ingress[&u64::from(config.ops_listen.port())],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]),
        "the operations port only from the monitoring namespace"
    );

    // Egress: DNS, and the port of every dependency the environment names.
    let (_, secret) = example_secret();
    let env: BTreeMap<String, String> = resolved_env(container).into_iter().collect();
    let needed: Vec<(&str, u64)> = vec![
        ("DNS", 53),
        ("DATABASE_URL", url_port(&env["DATABASE_URL"])),
        ("AMQP_URL", url_port(&env["AMQP_URL"])),
        ("REDIS_URL", url_port(&env["REDIS_URL"])),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            url_port(&env["OTEL_EXPORTER_OTLP_ENDPOINT"]),
        ),
    ];
    let allowed = egress(&policy);
    for (what, port) in &needed {
        assert!(
            allowed
                .iter()
                .any(|(p, proto, _)| p == port && proto == "TCP"),
            "egress does not admit {what} (TCP {port})"
        );
    }
    assert!(
        allowed
            .iter()
            .any(|(p, proto, _)| *p == 53 && proto == "UDP"),
        "egress does not admit DNS over UDP"
    );
    let expected: BTreeSet<u64> = needed.iter().map(|(_, p)| *p).collect();
    let extra: Vec<u64> = allowed
        .iter()
        .map(|(p, _, _)| *p)
        .filter(|p| !expected.contains(p) && *p != 4318)
        .collect();
    assert!(
        extra.is_empty(),
        "egress admits ports nothing uses: {extra:?}"
    );
    // The collector's own namespace only.
    let otlp = url_port(&env["OTEL_EXPORTER_OTLP_ENDPOINT"]);
    let host = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        .split("://")
        .nth(1)
        .and_then(|r| r.split([':', '/']).next())
        .unwrap()
        .to_owned();
    let namespace = host.split('.').nth(1).expect("service.namespace.svc host");
    let (_, _, to) = allowed.iter().find(|(p, _, _)| *p == otlp).unwrap();
    assert_eq!(
        to,
        &json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}]),
        "OTLP egress must go to the collector's namespace {namespace}"
    );

    // The Job: DNS and the database, nothing in.
    let migrate = object("NetworkPolicy", "weir-migrate");
    assert!(selects(&migrate, job_labels) && !selects(&migrate, pod_labels));
    assert!(
        migrate["spec"].get("ingress").is_none(),
        "nothing reaches the Job"
    );
    let ports: BTreeSet<u64> = egress(&migrate).iter().map(|(p, _, _)| *p).collect();
    assert_eq!(
        ports,
        BTreeSet::from([53, url_port(&secret["database-url"])]),
        "the Job reaches DNS and PostgreSQL only"
    );
}

#[test]
fn pods_run_hardened_as_the_images_user() {
    let image = containerfile();
    for (kind, name) in [("Deployment", "weir"), ("Job", "weir-migrate")] {
        let workload = object(kind, name);
        let pod = at(&workload, "/spec/template/spec");
        let c = only_container(&workload);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            u64_at(pod, "/securityContext/runAsUser"),
            image.uid,
            "{name}: runAsUser must be the Containerfile's USER"
        );
        assert_eq!(
            u64_at(pod, "/securityContext/runAsGroup"),
            image.gid,
            "{name}"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert!(sc["capabilities"].get("add").is_none(), "{name}");
        assert_eq!(
            c["image"],
            format!("weir:{}", env!("CARGO_PKG_VERSION")),
            "{name}: the image is the Containerfile's, tagged with the workspace version"
        );
        assert_eq!(
            workload["metadata"]["labels"]["app.kubernetes.io/version"],
            env!("CARGO_PKG_VERSION"),
            "{name}"
        );
    }
    // The Job migrates with the service's configuration and database.
    let job = object("Job", "weir-migrate");
    let c = only_container(&job);
    assert_eq!(c["args"], json!(["migrate"]));
    let deployment = object("Deployment", "weir");
    let d = only_container(&deployment);
    for var in ["WEIR_CONFIG", "DATABASE_URL"] {
        let of = |c: &Value| {
            env_entries(c)
                .into_iter()
                .find(|(n, _)| n == var)
                .map(|(_, v)| format!("{v:?}"))
        };
        assert!(of(c).is_some(), "the Job must set {var}");
        assert_eq!(of(c), of(d), "the Job's {var} must be the Deployment's");
    }
}

#[test]
fn secrets_and_variables_are_the_ones_the_service_reads() {
    let (secret_name, secret) = example_secret();
    for value in secret.values() {
        assert!(
            value.contains("CHANGE-ME"),
            "secret.example.yaml must hold placeholders only, not {value:?}"
        );
    }
    let mut used_keys = BTreeSet::new();
    for (kind, name) in [("Deployment", "weir"), ("Job", "weir-migrate")] {
        let workload = object(kind, name);
        let container = only_container(&workload);
        let entries = env_entries(container);
        for (var, value) in &entries {
            if let EnvValue::Secret {
                name: s,
                key,
                optional,
            } = value
            {
                assert_eq!(s, &secret_name, "{name}: {var} reads Secret {s}");
                assert!(
                    secret.contains_key(key),
                    "{name}: {var} reads key {key}, which secret.example.yaml does not have"
                );
                used_keys.insert(key.clone());
                if var == "DATABASE_URL" {
                    assert!(!optional, "{name}: DATABASE_URL must be required");
                }
            }
        }
        let names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
        let values: Vec<String> = entries
            .iter()
            .filter_map(|(_, v)| match v {
                EnvValue::Literal(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let unread = unread_variables(&names, &values);
        assert!(
            unread.is_empty(),
            "{name} sets variables the service does not read: {unread:?}"
        );
    }
    let unused: Vec<&String> = secret.keys().filter(|k| !used_keys.contains(*k)).collect();
    assert!(
        unused.is_empty(),
        "secret.example.yaml has keys nothing reads: {unused:?}"
    );
    assert!(
        secret["database-url"].starts_with("postgres://"),
        "production runs on PostgreSQL"
    );
}

/// The RUNBOOK's order: the Job's `weir migrate`, then the Deployment's `weir serve`, each
/// with its container's environment (example secrets, the ConfigMap as `WEIR_CONFIG`) against
/// a real PostgreSQL database; the probe and scrape paths answer, the API wants a credential,
/// both admin tokens of the Secret work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_and_the_deployment_run_with_their_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("weir.toml");
    std::fs::write(&config_file, configmap_toml()).unwrap();
    // The image's layout: the reference component in plugins.dir.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(weir_plugin_artifacts::ORDERS, plugins.join("orders.wasm")).unwrap();
    let db = PgTestDb::create()
        .await
        .expect("a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)");

    // What the container gets, made to run here: the database is the test's, the config file
    // and plugins.dir are where this test put them; the broker, the cache and the collector
    // are left out (their own tests cover them).
    let environment = |workload: &Value| -> Vec<(String, String)> {
        resolved_env(only_container(workload))
            .into_iter()
            .filter(|(n, _)| !["AMQP_URL", "REDIS_URL"].contains(&n.as_str()))
            .filter(|(n, _)| !n.starts_with("OTEL_"))
            .map(|(n, v)| match n.as_str() {
                "DATABASE_URL" => (n, db.url().to_owned()),
                "WEIR_CONFIG" => (n, config_file.to_string_lossy().into_owned()),
                _ => (n, v),
            })
            .chain([(
                "WEIR__PLUGINS__DIR".to_owned(),
                plugins.to_string_lossy().into_owned(),
            )])
            .collect()
    };
    let args = |workload: &Value| -> Vec<String> {
        only_container(workload)["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };

    let job = object("Job", "weir-migrate");
    let mut migrate = weir_command();
    migrate.args(args(&job)).envs(environment(&job));
    let out = tokio::time::timeout(WAIT, migrate.output())
        .await
        .expect("weir migrate exits")
        .expect("run weir migrate");
    assert!(
        out.status.success(),
        "the Job's `weir migrate` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deployment = object("Deployment", "weir");
    let env = environment(&deployment);
    let mut serve = weir_command();
    serve
        .args(args(&deployment))
        .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .envs(env.iter().cloned());
    let w = Weir::spawn(serve).await;
    let container = only_container(&deployment);
    let annotations = at(&deployment, "/spec/template/metadata/annotations");
    let scrape = annotations["prometheus.io/path"].as_str().unwrap();
    let mut paths: Vec<String> = ["startupProbe", "livenessProbe", "readinessProbe"]
        .iter()
        .map(|p| str_at(container, &format!("/{p}/httpGet/path")).to_owned())
        .collect();
    paths.push(scrape.to_owned());
    for path in &paths {
        // Readiness may answer 503 until the releases are applied: bounded polling on 503
        // only; any other answer fails at once.
        let started = tokio::time::Instant::now();
        loop {
            let res = client()
                .get(format!("{}{path}", w.ops))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            if status == 200 {
                if path == scrape {
                    let text = res.text().await.unwrap();
                    assert!(text.contains("weir_"), "{path}: no weir metrics");
                }
                break;
            }
            assert!(
                status == 503 && started.elapsed() < WAIT,
                "GET {path} on the operations listener: {status} {}\n{}",
                res.text().await.unwrap_or_default(),
                w.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }
    let info = w.ops_json("/infoz").await;
    assert_eq!(info["database"], "postgres", "{info}");
    // The image's component in plugins.dir was admitted (plugins.strict would have stopped
    // start-up otherwise) next to the built-in one: same bytes, one version.
    assert_eq!(info["features"]["plugins_dir"], true, "{info}");
    assert_eq!(info["refused_plugins"], json!([]), "{info}");

    // The API demands a credential (auth.mode of the ConfigMap).
    let res = client()
        .post(format!("{}/v1/orders", w.api))
        .header("Idempotency-Key", "deploy-1")
        .json(&order_body("cus_deploy", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the API must require a credential");
    // Both admin tokens of the Secret work (WEIR_ADMIN_TOKEN and WEIR__ADMIN_TOKENS__CI).
    let (_, secret) = example_secret();
    for key in ["admin-token", "admin-token-ci"] {
        let res = client()
            .get(format!("{}/admin/rotation", w.ops))
            .bearer_auth(&secret[key])
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "the Secret's {key} is not an admin token"
        );
    }
    w.kill9().await;
    db.drop_db().await.expect("drop the test database");
}

// ---------------------------------------------------------------------------------------------
// The Containerfile

/// What the tests need from the Containerfile.
struct Image {
    /// `FROM` lines: image and stage name.
    stages: Vec<(String, Option<String>)>,
    /// The builder's commands (`RUN`, continuation lines joined).
    runs: Vec<String>,
    uid: u64,
    gid: u64,
    exposed: BTreeSet<u64>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    /// `COPY` instructions as written (continuation lines joined).
    copies: Vec<String>,
    entrypoint: Value,
    cmd: Value,
    text: String,
}

fn containerfile() -> Image {
    let text = read(&root().join("Containerfile"));
    // Join continuation lines, drop comments.
    let mut instructions: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            if !current.trim().is_empty() {
                instructions.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    let mut image = Image {
        stages: Vec::new(),
        runs: Vec::new(),
        uid: u64::MAX,
        gid: u64::MAX,
        exposed: BTreeSet::new(),
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        copies: Vec::new(),
        entrypoint: Value::Null,
        cmd: Value::Null,
        text: text.clone(),
    };
    let unquote = |s: &str| s.trim().trim_matches('"').to_owned();
    for ins in instructions {
        let (op, rest) = ins.split_once(' ').unwrap_or((&ins, ""));
        let rest = rest.trim();
        match op.to_ascii_uppercase().as_str() {
            "FROM" => {
                let mut words = rest.split_whitespace();
                let from = words.next().unwrap().to_owned();
                let name = match (words.next(), words.next()) {
                    (Some(a), Some(n)) if a.eq_ignore_ascii_case("as") => Some(n.to_owned()),
                    _ => None,
                };
                image.stages.push((from, name));
            }
            "RUN" => image.runs.push(rest.to_owned()),
            "USER" => {
                let (u, g) = rest.split_once(':').unwrap_or((rest, rest));
                image.uid = u.parse().unwrap_or_else(|_| {
                    panic!("Containerfile USER {rest} must be numeric (uid:gid)")
                });
                image.gid = g.parse().unwrap_or_else(|_| {
                    panic!("Containerfile USER {rest} must be numeric (uid:gid)")
                });
            }
            "EXPOSE" => image.exposed.extend(
                rest.split_whitespace()
                    .map(|p| p.trim_end_matches("/tcp").parse::<u64>().expect("port")),
            ),
            "ENV" => {
                let (k, v) = rest.split_once('=').expect("ENV KEY=value");
                image.env.insert(k.trim().to_owned(), unquote(v));
            }
            "LABEL" => {
                // `k="v" k2="v2"`: split on `" ` boundaries.
                for pair in rest.split("\" ") {
                    if let Some((k, v)) = pair.split_once('=') {
                        image.labels.insert(k.trim().to_owned(), unquote(v));
                    }
                }
            }
            "COPY" => image.copies.push(rest.to_owned()),
            "ENTRYPOINT" => {
                image.entrypoint =
                    serde_json::from_str(rest).expect("ENTRYPOINT in exec (JSON) form")
            }
            "CMD" => image.cmd = serde_json::from_str(rest).expect("CMD in exec (JSON) form"),
            _ => {}
        }
    }
    image
}

/// The destination of the final stage's `COPY` whose source ends with `source_suffix`.
fn copy_destination(image: &Image, source_suffix: &str) -> String {
    image
        .copies
        .iter()
        .filter(|c| c.contains("--from=build"))
        .find_map(|c| {
            let words: Vec<&str> = c
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            (words.len() == 2 && words[0].ends_with(source_suffix)).then(|| words[1].to_owned())
        })
        .unwrap_or_else(|| panic!("no COPY --from=build of ...{source_suffix}"))
}

#[test]
fn the_containerfile_builds_what_the_manifests_run() {
    let image = containerfile();
    let version = env!("CARGO_PKG_VERSION");

    // Builder: the toolchain of rust-toolchain.toml, with the plugin target.
    let toolchain = read(&root().join("rust-toolchain.toml"));
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .expect("channel in rust-toolchain.toml");
    assert_eq!(image.stages.len(), 2, "a builder and a runtime stage");
    let (builder, name) = &image.stages[0];
    assert_eq!(name.as_deref(), Some("build"));
    assert!(
        builder.starts_with(&format!("docker.io/library/rust:{channel}-")),
        "the builder {builder} must be Rust {channel} (rust-toolchain.toml)"
    );
    assert!(
        image
            .runs
            .iter()
            .any(|r| r.contains("rustup target add wasm32-wasip2 wasm32-unknown-unknown")),
        "the builder needs both WebAssembly targets (the plugins)"
    );
    let build = image
        .runs
        .iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build step");
    for part in ["--release", "--locked", "-p weir-host", "--bin weir"] {
        assert!(build.contains(part), "the cargo build step lacks {part}");
    }
    // The plugin component the image ships is the one the build produced: the same bytes
    // the binary embeds.
    let artifact = "target/plugins/wasm32-unknown-unknown/release/weir_plugin_orders.wasm";
    assert!(
        build.contains(artifact),
        "the build step must install {artifact}"
    );
    let built = std::fs::read(root().join(artifact))
        .unwrap_or_else(|e| panic!("{artifact} (the Containerfile's plugin source): {e}"));
    assert_eq!(
        built,
        weir_plugin_artifacts::ORDERS_WASM,
        "{artifact} is not the reference plugin"
    );

    // Runtime: a shell-less base, a numeric non-root user, both ports, the workspace version.
    let (runtime, _) = &image.stages[1];
    assert!(
        runtime.contains("distroless"),
        "the runtime stage {runtime} should be distroless (no shell)"
    );
    assert!(
        image.uid != 0 && image.gid != 0 && image.uid != u64::MAX,
        "USER must be numeric and non-root"
    );
    let config = configmap_config();
    assert_eq!(
        image.exposed,
        BTreeSet::from([
            u64::from(config.listen.port()),
            u64::from(config.ops_listen.port())
        ]),
        "EXPOSE must be the ConfigMap's listen and ops_listen ports"
    );
    assert_eq!(
        image
            .labels
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        Some(version)
    );
    assert!(
        image.text.contains(&format!("-t weir:{version} ")),
        "the build command in the header must tag weir:{version}"
    );
    // Paths: the binary is the entrypoint, the plugin is in the ConfigMap's plugins.dir, the
    // data directory is the ConfigMap's data_dir.
    let binary = copy_destination(&image, "/usr/local/bin/weir");
    assert_eq!(image.entrypoint, json!([binary]));
    assert_eq!(image.cmd, json!(["serve"]));
    let plugins_dir = copy_destination(&image, "/usr/share/weir/plugins/");
    assert_eq!(
        Path::new(&plugins_dir),
        config
            .plugins
            .dir
            .as_deref()
            .expect("plugins.dir in the ConfigMap"),
        "the image's plugin directory must be the ConfigMap's plugins.dir"
    );
    assert!(
        build.contains(&format!("/out{}orders.wasm", plugins_dir)),
        "the build step must place orders.wasm under /out{plugins_dir}"
    );
    assert_eq!(
        image.env.get("WEIR_DATA_DIR").map(PathBuf::from),
        Some(config.data_dir.clone()),
        "the image's WEIR_DATA_DIR must be the ConfigMap's data_dir"
    );
    assert_eq!(
        copy_destination(&image, "/var/lib/weir"),
        config.data_dir.to_string_lossy(),
        "the image must create data_dir for its user"
    );
}

// ---------------------------------------------------------------------------------------------
// systemd

/// A unit file: (section, key, value) in order; `Key=` with an empty value is kept.
fn unit() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in read(&root().join("deploy/systemd/weir.service")).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=value");
        out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

fn unit_values(unit: &[(String, String, String)], key: &str) -> Vec<String> {
    unit.iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

fn unit_value(unit: &[(String, String, String)], key: &str) -> String {
    unit_values(unit, key)
        .pop()
        .unwrap_or_else(|| panic!("weir.service sets no {key}="))
}

/// A systemd time span (`45s`, `2min`, `1min 30s`, `500ms`, plain seconds).
fn systemd_span(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    for word in text.split_whitespace() {
        let split = word
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(word.len());
        let (n, unit) = word.split_at(split);
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("time span {text}"));
        total += match unit {
            "" | "s" | "sec" => Duration::from_secs(n),
            "ms" | "msec" => Duration::from_millis(n),
            "m" | "min" => Duration::from_secs(60 * n),
            other => panic!("time unit {other} in {text}"),
        };
    }
    total
}

/// A systemd size (`1G`, `768M`, bytes), base 1024.
fn systemd_bytes(text: &str) -> u64 {
    let (n, unit) = text.split_at(text.len() - 1);
    match unit {
        "K" => n.parse::<u64>().unwrap() << 10,
        "M" => n.parse::<u64>().unwrap() << 20,
        "G" => n.parse::<u64>().unwrap() << 30,
        _ => text.parse().unwrap_or_else(|_| panic!("size {text}")),
    }
}

fn systemd_config() -> Config {
    load_config(&read(&root().join("deploy/systemd/weir.toml")))
        .unwrap_or_else(|e| panic!("the service refuses deploy/systemd/weir.toml: {e}"))
}

#[test]
fn the_systemd_unit_stops_within_its_timeout_and_is_hardened() {
    let unit = unit();
    let config = systemd_config();
    assert!(
        matches!(config.auth.mode, Some(AuthMode::ApiKeys | AuthMode::Jwt)),
        "weir.toml must name auth.mode api_keys or jwt"
    );

    // One SIGTERM, and the kill only after the whole sequence's bound with a margin.
    assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM");
    let timeout = systemd_span(&unit_value(&unit, "TimeoutStopSec"));
    let bound = config.stop_bound();
    assert!(
        timeout >= bound + STOP_MARGIN,
        "TimeoutStopSec {timeout:?} < the shutdown bound {bound:?} + margin {STOP_MARGIN:?}"
    );
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    assert!(
        unit_value(&unit, "RestartPreventExitStatus")
            .split_whitespace()
            .any(|s| s == "2"),
        "exit status 2 (bad configuration) must not restart-loop"
    );

    // Files: the configuration it is started with, the state directory as data_dir.
    let exec = unit_value(&unit, "ExecStart");
    let config_dir = unit_value(&unit, "ConfigurationDirectory");
    assert!(
        exec.contains(&format!("serve --config /etc/{config_dir}/weir.toml")),
        "ExecStart must serve with /etc/{config_dir}/weir.toml: {exec}"
    );
    let state = unit_value(&unit, "StateDirectory");
    assert_eq!(
        config.data_dir,
        Path::new("/var/lib").join(&state),
        "weir.toml's data_dir must be the unit's StateDirectory"
    );
    assert_eq!(
        unit_value(&unit, "EnvironmentFile"),
        format!("/etc/{config_dir}/weir.env")
    );

    // Hardening.
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert!(
            unit_values(&unit, key).iter().any(|v| v == value),
            "weir.service must set {key}={value}"
        );
    }
    // Cranelift maps the compiled plugins executable: see the strace test.
    assert!(
        unit_values(&unit, "MemoryDenyWriteExecute")
            .iter()
            .all(|v| v == "no"),
        "MemoryDenyWriteExecute would stop wasmtime from mapping compiled plugins"
    );
    let memory_max = systemd_bytes(&unit_value(&unit, "MemoryMax"));
    assert!(
        memory_max >= memory_bound(&config),
        "MemoryMax {} MiB below the bound {} MiB",
        memory_max >> 20,
        memory_bound(&config) >> 20
    );

    // The secrets file names only variables the service reads.
    let env_file = read(&root().join("deploy/systemd/weir.env.example"));
    let entries: Vec<(String, String)> = env_file
        .lines()
        .map(|l| l.trim().trim_start_matches('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(entries.iter().any(|(k, _)| k == "WEIR_ADMIN_TOKEN"));
    let names: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    let values: Vec<String> = entries.iter().map(|(_, v)| v.clone()).collect();
    let unread = unread_variables(&names, &values);
    assert!(
        unread.is_empty(),
        "weir.env.example names variables the service does not read: {unread:?}"
    );
}

/// The unit with its `ExecStart` pointing at the built binary (verify checks that it exists).
fn unit_for_verify(dir: &Path) -> PathBuf {
    let text = read(&root().join("deploy/systemd/weir.service")).replace(
        "ExecStart=/usr/local/bin/weir ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_weir")),
    );
    let path = dir.join("weir.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    let Some(tool) = on_path("systemd-analyze") else {
        missing_tool(
            "systemd-analyze",
            "apt-get install systemd; .ci/run does this",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = unit_for_verify(dir.path());
    // `verify` exits 0 on unknown keys and unparsable values too, with a warning: any output
    // is a failure.
    let out = std::process::Command::new(&tool)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // Exposure (0-10, lower is better) at most 2.0 ("OK").
    let out = std::process::Command::new(&tool)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze security");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security rates the unit above 2.0:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every system call in a `SystemCallFilter` group, recursively (`systemd-analyze
/// syscall-filter` prints each group with its members, groups included).
fn syscall_group(tool: &Path, group: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(tool)
        .arg("syscall-filter")
        .output()
        .expect("run systemd-analyze syscall-filter");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_owned());
            groups.insert(line.trim().to_owned(), Vec::new());
        } else if let Some(g) = &current {
            let item = line.trim();
            if !item.is_empty() && !item.starts_with('#') {
                groups.get_mut(g).unwrap().push(item.to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut todo = vec![group.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(g) = todo.pop() {
        if !seen.insert(g.clone()) {
            continue;
        }
        for item in groups.get(&g).unwrap_or_else(|| panic!("no group {g}")) {
            if item.starts_with('@') {
                todo.push(item.clone());
            } else {
                out.insert(item.clone());
            }
        }
    }
    out
}

/// `weir serve` with the unit's configuration under strace while it starts, serves an order
/// (a plugin call) and drains: what it asks of the kernel fits the unit's sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_strace_the_service_stays_inside_the_units_sandbox() {
    let (Some(analyze), Some(strace)) = (on_path("systemd-analyze"), on_path("strace")) else {
        missing_tool(
            "systemd-analyze and strace",
            "apt-get install systemd strace; .ci/run does this",
        );
        return;
    };
    const TOKEN: &str = "admin-token-for-the-strace-run";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let trace = dir.path().join("trace");
    // The unit's command line and configuration; here on loopback ports and a temporary state
    // directory, with the demo catalog so an order can be placed.
    let mut cmd = tokio::process::Command::new(&strace);
    cmd.args(["-f", "-qq", "-s", "256", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--config"])
        .arg(root().join("deploy/systemd/weir.toml"))
        .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data);
    for (var, _) in std::env::vars() {
        if var.starts_with("WEIR") || var.starts_with("OTEL_") {
            cmd.env_remove(&var);
        }
    }
    for var in ["DATABASE_URL", "AMQP_URL", "REDIS_URL"] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info")
        .env("WEIR_ADMIN_TOKEN", TOKEN)
        .env("WEIR__SEED_DEMO_CATALOG", "true");
    let w = Weir::spawn(cmd).await;
    let created: Value = client()
        .post(format!("{}/admin/v1/apikeys", w.ops))
        .bearer_auth(TOKEN)
        .json(&json!({"tenant": "acme", "name": "strace", "scopes": ["orders:write"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().expect("an API key").to_owned();
    let res = client()
        .post(format!("{}/v1/orders", w.api))
        .bearer_auth(&key)
        .header("Idempotency-Key", "strace-1")
        .json(&order_body("cus_strace", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    // SIGTERM to weir itself (strace's only child), not to strace.
    let strace_pid = w.pid();
    let children = read(Path::new(&format!(
        "/proc/{strace_pid}/task/{strace_pid}/children"
    )));
    let weir_pid = children
        .split_whitespace()
        .next()
        .expect("strace runs weir");
    let status = std::process::Command::new("kill")
        .args(["-TERM", weir_pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {weir_pid}");
    let mut w = w;
    assert_eq!(
        w.exit_code().await,
        Some(0),
        "weir under strace: {}",
        w.stderr()
    );

    let trace = read(&trace);
    let calls: Vec<(&str, &str)> = trace
        .lines()
        .filter_map(|line| {
            // `PID name(args...` (an `<... name resumed>` line repeats an earlier call).
            let rest = line.split_once(' ')?.1.trim_start();
            let open = rest.find('(')?;
            let name = &rest[..open];
            (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .then_some((name, &rest[open..]))
        })
        .collect();
    assert!(
        calls.len() > 1000,
        "the trace is too short: {} calls",
        calls.len()
    );

    // Every system call is allowed by the unit's SystemCallFilter= lines (an allow list:
    // groups and names; a `~` line denies).
    let unit = unit();
    let mut allowed = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for line in unit_values(&unit, "SystemCallFilter") {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest.to_owned()),
            None => (false, line.clone()),
        };
        for item in list.split_whitespace() {
            let names = if item.starts_with('@') {
                syscall_group(&analyze, item)
            } else {
                BTreeSet::from([item.to_owned()])
            };
            if deny { &mut refused } else { &mut allowed }.extend(names);
        }
    }
    assert!(
        !allowed.is_empty(),
        "weir.service has no SystemCallFilter allow list"
    );
    let used: BTreeSet<&str> = calls.iter().map(|(n, _)| *n).collect();
    let denied: Vec<&&str> = used
        .iter()
        .filter(|n| !allowed.contains(**n) || refused.contains(**n))
        .collect();
    assert!(
        denied.is_empty(),
        "system calls weir.service's SystemCallFilter refuses: {denied:?}"
    );

    // Every socket is of a family of the unit's RestrictAddressFamilies=.
    let families: BTreeSet<&str> = calls
        .iter()
        .filter(|(n, _)| *n == "socket")
        .filter_map(|(_, a)| a.trim_start_matches('(').split(',').next())
        .collect();
    assert!(families.contains("AF_INET"), "no TCP socket in the trace");
    let restricted = unit_value(&unit, "RestrictAddressFamilies");
    let allowed_families: BTreeSet<&str> = restricted.split_whitespace().collect();
    assert!(
        families.is_subset(&allowed_families),
        "address families outside RestrictAddressFamilies={restricted}: {families:?}"
    );

    // Files are written only in the state directory (ProtectSystem=strict, and the pod's
    // read-only root filesystem); /dev/null and the process's own /proc files are fine.
    let data_prefix = data.to_string_lossy().into_owned();
    let written: BTreeSet<String> = calls
        .iter()
        .filter(|(n, a)| {
            (*n == "openat" || *n == "open")
                && (a.contains("O_WRONLY") || a.contains("O_RDWR") || a.contains("O_CREAT"))
        })
        .filter_map(|(_, a)| a.split('"').nth(1).map(str::to_owned))
        .filter(|p| {
            !p.starts_with(&data_prefix) && p != "/dev/null" && !p.starts_with("/proc/self/")
        })
        .collect();
    assert!(
        written.is_empty(),
        "files written outside the state directory: {written:?}"
    );

    // Cranelift's code is made executable at run time: MemoryDenyWriteExecute=yes would
    // refuse exactly this.
    assert!(
        calls
            .iter()
            .any(|(n, a)| *n == "mprotect" && a.contains("PROT_EXEC")),
        "no mprotect(PROT_EXEC) in the trace: the MemoryDenyWriteExecute comment is stale"
    );
}

/// `deploy/k8s/rollout.sh`, the runbook's Kubernetes procedures, run step by step against a
/// recording `kubectl` (no cluster runs here): every object a command names exists in the
/// manifests under that kind, namespace and name; `apply -k .` is checked by the real
/// `kubectl kustomize` (offline); the Job applied by `migrate` is migrate-job.yaml with only its
/// image replaced.
#[test]
fn the_rollout_script_names_only_objects_of_the_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("calls");
    let fake = dir.path().join("kubectl");
    let real = which_kubectl();
    std::fs::write(
        &fake,
        format!(
            "#!/usr/bin/env bash\nset -euo pipefail\n\
             printf '%s\\n' \"$*\" >> '{log}'\n\
             if [ \"$*\" = 'apply -f -' ]; then cat > '{log}.stdin'; fi\n\
             if [ \"$*\" = 'apply -k .' ] && [ -n '{real}' ]; then '{real}' kustomize . > /dev/null; fi\n",
            log = log.display(),
            real = real.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(&fake)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let image = "registry.example.com/weir:9.9.9";
    for args in [
        vec!["migrate", image],
        vec!["roll", image],
        vec!["check"],
        vec!["undo"],
        vec!["restart"],
    ] {
        let out = std::process::Command::new("bash")
            .arg(root().join("deploy/k8s/rollout.sh"))
            .args(&args)
            .env("PATH", &path)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "rollout.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let calls = read(&log);
    let namespace = object("Namespace", "weir");
    assert_eq!(str_at(&namespace, "/metadata/name"), "weir");
    let deployment = object("Deployment", "weir");
    let job = object("Job", "weir-migrate");
    for o in [&deployment, &job] {
        assert_eq!(str_at(o, "/metadata/namespace"), "weir");
    }
    let container = only_container(&deployment);
    let mut named = 0;
    for call in calls.lines() {
        let words: Vec<&str> = call.split_whitespace().collect();
        if words.starts_with(&["-n"]) {
            assert_eq!(words[1], "weir", "{call}: namespace of the manifests");
        }
        for w in &words {
            if let Some(name) = w.strip_prefix("deployment/") {
                assert_eq!(str_at(&deployment, "/metadata/name"), name, "{call}");
                named += 1;
            }
            if let Some(name) = w.strip_prefix("job/") {
                assert_eq!(str_at(&job, "/metadata/name"), name, "{call}");
                named += 1;
            }
            if let Some(c) = w.strip_suffix(&format!("={image}")) {
                assert_eq!(str_at(container, "/name"), c, "{call}: container name");
            }
            if let Some(selector) = w.strip_prefix("app.kubernetes.io/name=") {
                assert_eq!(
                    str_at(
                        &deployment,
                        "/spec/selector/matchLabels/app.kubernetes.io~1name"
                    ),
                    selector,
                    "{call}"
                );
            }
        }
        if words.ends_with(&["job", "weir-migrate", "--ignore-not-found"]) {
            named += 1;
        }
    }
    assert!(named >= 8, "too few objects named: {calls}");
    let applied: Vec<Value> =
        serde_norway::Deserializer::from_str(&read(&dir.path().join("calls.stdin")))
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
    let mut expected = job.clone();
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    assert_eq!(
        applied,
        vec![expected],
        "migrate applies migrate-job.yaml with the new image"
    );
    for want in [
        "-n weir wait --for=condition=complete job/weir-migrate --timeout=10m",
        "-n weir rollout status deployment/weir --timeout=15m",
        "-n weir rollout undo deployment/weir",
        "-n weir rollout restart deployment/weir",
    ] {
        assert!(calls.contains(want), "no `kubectl {want}` in {calls}");
    }
}

/// The real kubectl, for the offline `kustomize` check (none: that check is skipped outside CI).
fn which_kubectl() -> Option<PathBuf> {
    let found = std::env::var("PATH").ok().and_then(|p| {
        p.split(':')
            .map(|d| Path::new(d).join("kubectl"))
            .find(|c| c.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "kubectl is required in CI (for `kubectl kustomize`)"
        );
    }
    found
}

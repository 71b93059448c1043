//! The `weir` binary: wiring only. See the library crate for everything else.
//!
//! The process's Rust allocations go through mimalloc, built without its transparent-huge-page
//! advice (`no_thp`): against glibc's allocator it served more quotes per second in five of six
//! paired rounds (+7 to +12 %, one round -5 %), with idle RSS 57.7 against 55.2 MiB
//! (BENCHMARKS.md, "Span fields, a plugin call without WASI, and the allocator"). With the
//! huge-page advice its idle RSS was twice glibc's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing::Instrument as _;
use weir_host::server::config::{Config, Overrides};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "weir", version, about = "Weir service host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (SQLite in --data-dir unless DATABASE_URL is set).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(CommonArgs),
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Manage API keys of the public API on a running instance (WEIR_ADMIN_URL,
    /// WEIR_ADMIN_TOKEN).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Inspect and replay the consumer's dead-letter queue (needs AMQP_URL).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Print dead-lettered messages (oldest first) as JSON lines; they stay in the DLQ.
    List {
        #[command(flatten)]
        common: CommonArgs,
        /// At most this many messages.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Move dead-lettered messages back to the consumer queue (duplicates are absorbed by
    /// the consumer's inbox).
    Replay {
        #[command(flatten)]
        common: CommonArgs,
        /// At most this many messages.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Only the message with this message id.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Fail closed: refuse to start when any component of plugins.dir is refused at
    /// admission (sets plugins.strict; without it a refused component is logged and left out).
    #[arg(long)]
    strict: bool,
    /// Serve this component file as the orders plugin (its plugin name becomes
    /// plugins.orders); a refused component stops start-up.
    #[arg(long, value_name = "FILE.wasm")]
    plugin: Option<PathBuf>,
    /// With --plugin: whenever the file changes, admit it like an upload and serve it once
    /// admitted (a refused build leaves the last good version serving); one line per
    /// outcome on stderr.
    #[arg(long, requires = "plugin")]
    watch: bool,
}

#[derive(Debug, Clone, Args)]
struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// API listen address (port 0 picks a free port).
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Operations listen address (health, info).
    #[arg(long, env = "WEIR_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// Directory for the embedded database.
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL for production; SQLite in the data directory when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Bearer token of the admin endpoints (disabled when unset).
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Redis URL of the shared catalog cache (in-process cache when unset).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// RabbitMQ URL (`amqp://user:pass@host:5672/vhost`): events go over the broker. Unset,
    /// the embedded default serves them at `/v1/events`.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
}

impl CommonArgs {
    fn load(self) -> Result<Config, String> {
        self.load_with(false, None)
    }

    /// [`CommonArgs::load`]; `plugins_strict` is `weir serve --strict`, `plugin_file`
    /// `--plugin FILE [--watch]`.
    fn load_with(
        self,
        plugins_strict: bool,
        plugin_file: Option<weir_host::server::config::PluginFile>,
    ) -> Result<Config, String> {
        Config::load(&Overrides {
            config_file: self.config,
            listen: self.listen,
            ops_listen: self.ops_listen,
            data_dir: self.data_dir,
            database_url: self.database_url,
            admin_token: self.admin_token,
            amqp_url: self.amqp_url,
            redis_url: self.redis_url,
            plugins_strict,
            plugin_file,
        })
        .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Create a key; its text is printed once and never shown again.
    Create {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// A label for operators.
        #[arg(long)]
        name: String,
        /// A granted scope (repeat): orders:write, orders:read, products:write, events:read.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// When the key stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key id.
        id: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Create a plugin project (Rust: a crate using weir-sdk; Python: app.py for
    /// componentize-py; native unit tests, a README) in ./NAME or --dir.
    New {
        /// Plugin and crate name: 1-64 characters of a-z, 0-9 and '-', starting with a letter.
        name: String,
        /// Template language: rust (a crate using weir-sdk) or python (componentize-py).
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Project directory (absent or empty) instead of ./NAME.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The weir-sdk crate directory the project depends on by path (default: sdk/ of the
        /// checkout this binary was built from; the SDK is not published).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Validate a component against the weir:orders world and run its describe self-test.
    Check {
        /// The component file.
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay a cases file on a component offline: each decision, typed error and budget
    /// use; with --compare, only the cases two components decide differently (exit 1 when
    /// any differ, a case fails or an expectation is not met).
    Test {
        /// The component file.
        file: PathBuf,
        /// The cases file (weir.cases/1: `weir plugin cases export`, or the SDK's
        /// conformance kit sdk/conformance/cases.json).
        #[arg(long)]
        cases: PathBuf,
        /// A second component to compare decisions with (e.g. the running version).
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record real plugin inputs on a running instance and export them as a cases file
    /// (WEIR_ADMIN_URL, WEIR_ADMIN_TOKEN).
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// Upload a component to a running instance (WEIR_ADMIN_URL, WEIR_ADMIN_TOKEN) and
    /// optionally release it.
    Push {
        /// The component file.
        file: PathBuf,
        /// Make it the stable version at once.
        #[arg(long, conflicts_with_all = ["canary", "shadow"])]
        activate: bool,
        /// Route this percentage (1-100) of routing keys to it.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100), conflicts_with = "shadow")]
        canary: Option<u8>,
        /// Compare its decisions with the stable version's on this percentage of requests.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
        shadow: Option<u8>,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Every plugin: release and versions.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// One plugin: release, versions, per-version figures.
    Status {
        /// Plugin name.
        name: String,
        #[command(flatten)]
        output: Output,
    },
    /// Make the canary the stable version.
    Promote {
        /// Plugin name.
        name: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Go back to the previous stable version at once (canary and shadow removed).
    Rollback {
        /// Plugin name.
        name: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// The audit trail of a plugin's releases, newest first.
    History {
        /// Plugin name.
        name: String,
        /// At most this many entries.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum CasesCommand {
    /// Start recording (discarding any earlier recording of the instance).
    Start {
        /// Percentage of plugin calls recorded.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
        sample_percent: u8,
        /// Most cases kept (1-10000).
        #[arg(long, default_value_t = 1000)]
        max_cases: usize,
        /// How long to record, in seconds (1-86400).
        #[arg(long, default_value_t = 600)]
        window_seconds: u64,
        /// Keep customer ids and metadata values as they are (only on data you may copy).
        #[arg(long)]
        no_redact: bool,
        #[command(flatten)]
        output: Output,
    },
    /// The recording's status.
    Status {
        #[command(flatten)]
        output: Output,
    },
    /// Write the cases recorded so far as a cases file (the recording goes on).
    Export {
        /// Where to write it (stdout when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Stop the recording and discard its cases.
    Stop {
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Args)]
struct Output {
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
}

/// Longest error chain printed on stderr (escaped for the terminal, then cut with a marker).
const ERROR_MAX_CHARS: usize = 4096;

impl ServeArgs {
    /// The configuration `serve` runs with (file, environment, flags).
    fn load(&self) -> Result<Config, String> {
        let plugin_file = self
            .plugin
            .clone()
            .map(|path| weir_host::server::config::PluginFile {
                path,
                watch: self.watch,
            });
        self.common.clone().load_with(self.strict, plugin_file)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` reads its configuration before the async runtime exists: `server_threads`
    // sizes the runtime. The other commands keep tokio's default (one worker per CPU).
    let serve_config = match &cli.command {
        Command::Serve(args) => Some(args.load()),
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(Ok(config)) = &serve_config {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        builder.worker_threads(config.server_workers(cpus));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = rt.block_on(run(cli, serve_config));
    // Everything `run` needs was awaited, each step within its bound. What may still run on a
    // blocking thread is a telemetry flush abandoned at `telemetry.shutdown_timeout_ms`
    // (an exporter waiting on a collector that never answers): dropping the runtime would wait
    // for it without limit, so it is left behind and the process exits now.
    rt.shutdown_background();
    code
}

/// `serve_config` is the configuration `main` loaded for `serve` to size the runtime; `serve`
/// uses it rather than reading the file and the environment a second time.
async fn run(cli: Cli, serve_config: Option<Result<Config, String>>) -> ExitCode {
    match cli.command {
        Command::Serve(args) => {
            let config = match serve_config.unwrap_or_else(|| args.load()) {
                Ok(c) => c,
                Err(e) => {
                    weir_host::telemetry::init_logging();
                    tracing::error!(error = %e, "invalid configuration");
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            // Before the server: runtime metrics bind to the global meter provider at start.
            let telemetry = match weir_host::telemetry::init(
                &config.telemetry,
                &config.environment,
                config.region.as_deref(),
            ) {
                Ok(t) => t,
                Err(e) => {
                    weir_host::telemetry::init_logging();
                    tracing::error!(error = %e, "telemetry set-up failed");
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            // Before serving, so a signal arriving during start-up is not lost.
            let mut signals = match weir_host::lifecycle::Signals::install() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install signal handlers");
                    eprintln!("error: cannot install signal handlers: {e}");
                    telemetry.shutdown().await;
                    return ExitCode::FAILURE;
                }
            };
            // Start-up runs in its own span: a failure is recorded there once, with its chain.
            let span = tracing::info_span!("weir.start", otel.status_code = tracing::field::Empty);
            let started = weir_host::server::Server::start(config)
                .instrument(span.clone())
                .await;
            let server = match started {
                Ok(s) => s,
                Err(e) => {
                    let chain = format!("{e:#}");
                    span.record("otel.status_code", "ERROR");
                    weir_host::telemetry::record_exception(&span, "STARTUP_FAILED", e.as_ref());
                    tracing::error!(parent: &span, error = %chain, "start-up failed");
                    drop(span);
                    // A refused plugin's chain can echo what the component did.
                    eprintln!(
                        "error: {}",
                        weir_host::runtime::check::escape_terminal_message(&chain, ERROR_MAX_CHARS)
                    );
                    // A contract refusal lists its mismatches as `weir plugin check` does.
                    if let Some(report) = e
                        .chain()
                        .find_map(|c| c.downcast_ref::<weir_host::runtime::LoadError>())
                        .and_then(weir_host::runtime::LoadError::contract)
                    {
                        eprint!("{}", weir_host::runtime::check::contract_text(report));
                    }
                    telemetry.shutdown().await;
                    return ExitCode::FAILURE;
                }
            };
            drop(span);
            let signal = signals.recv().await;
            tracing::info!(signal, "shutdown requested; draining");
            // The coordinator (`weir_host::lifecycle::shutdown`); a second signal cuts it short.
            let marker = server.run_marker();
            tokio::select! {
                _report = server.drain() => {}
                second = signals.recv() => {
                    // The next start reports this run's end as `forced`.
                    marker.forced();
                    tracing::error!(
                        signal = second,
                        exit_code = weir_host::lifecycle::EXIT_FORCED,
                        "shutdown: second signal; exiting immediately without finishing the drain"
                    );
                    std::process::exit(i32::from(weir_host::lifecycle::EXIT_FORCED));
                }
            }
            // Last: flush spans, metrics and logs of the drain itself (bounded, off-runtime).
            telemetry.shutdown().await;
            tracing::info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Command::Migrate(args) => {
            weir_host::telemetry::init_logging();
            let config = match args.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if config.database_url.is_none()
                && let Err(e) = config.ensure_data_dir()
            {
                eprintln!("error: cannot create {}: {e}", config.data_dir.display());
                return ExitCode::FAILURE;
            }
            let url = config.effective_database_url();
            let result = async {
                let store = weir_host::storage::connect(
                    url.expose(),
                    &weir_host::storage::StoreOptions::default(),
                )
                .await
                .with_context(|| format!("could not open the database at {}", url.redacted()))?;
                store.migrate().await.with_context(|| {
                    format!("could not migrate the database at {}", url.redacted())
                })?;
                store.close().await;
                anyhow::Ok(())
            }
            .await;
            match result {
                Ok(()) => {
                    println!("migrations applied to {}", url.redacted());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dlq { command } => dlq(command).await,

        Command::Plugin {
            command: PluginCommand::Check { file, json },
        } => match weir_host::runtime::check::check(&file).await {
            Ok(report) => {
                print_report(json, &report);
                ExitCode::SUCCESS
            }
            Err(e) if e.contract().is_some() => {
                let stage = e.stage();
                let report = e.contract().expect("checked above");
                if json {
                    let body = serde_json::json!({
                        "error": format!("refused at the {stage} stage"),
                        "stage": stage,
                        "contract": report,
                    });
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&body).unwrap_or_default()
                    );
                } else {
                    use weir_host::runtime::check::{contract_text, escape_terminal};
                    eprint!(
                        "error: {}: refused at the {stage} stage: {}",
                        escape_terminal(&file.display().to_string(), usize::MAX),
                        contract_text(report)
                    );
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                // The chain can echo what the component did (a trap message, its names).
                use weir_host::runtime::check::{escape_terminal, escape_terminal_message};
                eprintln!(
                    "error: {}: {}",
                    escape_terminal(&file.display().to_string(), usize::MAX),
                    escape_terminal_message(
                        &format!("{:#}", anyhow::Error::new(e)),
                        ERROR_MAX_CHARS
                    )
                );
                ExitCode::FAILURE
            }
        },
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    dir,
                    sdk_path,
                },
        } => plugin_new(name, lang, dir, sdk_path),
        Command::Plugin {
            command:
                PluginCommand::Test {
                    file,
                    cases,
                    compare,
                    json,
                },
        } => plugin_test(&file, &cases, compare.as_deref(), json).await,
        Command::Plugin { command } => plugin_client(command).await,
        Command::Apikey { command } => apikey_client(command).await,
    }
}

async fn dlq(command: DlqCommand) -> ExitCode {
    let (args, limit, id, replay) = match command {
        DlqCommand::List { common, limit } => (common, limit, None, false),
        DlqCommand::Replay { common, limit, id } => (common, limit, id, true),
    };
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(url) = config.amqp_url.clone() else {
        eprintln!("error: AMQP_URL (or amqp_url) is not set: there is no dead-letter queue");
        return ExitCode::from(2);
    };
    let events = &config.events;
    if replay {
        match weir_host::events::dlq::replay(&url, events, limit, id.as_deref()).await {
            Ok(report) => {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    } else {
        match weir_host::events::dlq::list(&url, events, limit).await {
            Ok(messages) => {
                for m in messages {
                    println!("{}", serde_json::to_string(&m).unwrap_or_default());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// A client command's answer: the API's JSON with `--json`, else `text`.
fn print(json: bool, value: &serde_json::Value, text: String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{text}");
    }
}

/// The exit code of a client command: its error on stderr.
fn exit_code(result: Result<(), weir_host::cli::ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `weir apikey create|list|revoke`: a client of the operations API.
async fn apikey_client(command: ApikeyCommand) -> ExitCode {
    use weir_host::cli::{AdminClient, api_key_line};
    let client = match AdminClient::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        ApikeyCommand::Create {
            tenant,
            name,
            scopes,
            expires_at,
            output,
        } => client
            .create_api_key(&tenant, &name, &scopes, expires_at.as_deref())
            .await
            .map(|v| {
                let key = v
                    .get("key")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("-");
                let text = format!(
                    "{key}\n{}(the key is shown only now: store it as a secret)\n",
                    api_key_line(&v)
                );
                print(output.json, &v, text);
            }),
        ApikeyCommand::List { tenant, output } => {
            client.list_api_keys(tenant.as_deref()).await.map(|v| {
                let text = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(api_key_line)
                    .collect::<String>();
                print(output.json, &v, text);
            })
        }
        ApikeyCommand::Revoke { id, output } => client
            .revoke_api_key(&id)
            .await
            .map(|v| print(output.json, &v, api_key_line(&v))),
    };
    exit_code(result)
}

/// `weir plugin new`: a plugin project on disk; usage errors exit 2.
fn plugin_new(
    name: String,
    lang: String,
    dir: Option<PathBuf>,
    sdk_path: Option<PathBuf>,
) -> ExitCode {
    use weir_host::cli::scaffold::{NewPlugin, create, default_sdk_path};
    let plugin = NewPlugin {
        dir: dir.unwrap_or_else(|| PathBuf::from(&name)),
        name,
        lang,
        sdk_path: sdk_path.unwrap_or_else(default_sdk_path),
    };
    match create(&plugin) {
        Ok(files) => {
            let dir = plugin.dir.display();
            println!("created plugin {} in {dir}:", plugin.name);
            for file in files {
                println!("  {file}");
            }
            println!("next:\n{}", plugin.next_steps());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `weir plugin push|list|status|promote|rollback|history`: a client of the operations API.
async fn plugin_client(command: PluginCommand) -> ExitCode {
    use weir_host::cli::{AdminClient, PushTo, history_text, plugin_text, release_line};
    let client = match AdminClient::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let result = match command {
        PluginCommand::Push {
            file,
            activate,
            canary,
            shadow,
            reason,
            output,
        } => {
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            let to = match (activate, canary, shadow) {
                (true, _, _) => PushTo::Stable,
                (_, Some(w), _) => PushTo::Canary(w),
                (_, _, Some(p)) => PushTo::Shadow(p),
                _ => PushTo::Nowhere,
            };
            client
                .push(bytes, to, reason.as_deref())
                .await
                .map(|(admitted, released)| {
                    let mut text = format!(
                        "{} {} {} ({} bytes) {}\n",
                        field(&admitted, "name"),
                        field(&admitted, "version"),
                        field(&admitted, "digest"),
                        admitted
                            .get("size")
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(0),
                        if admitted.get("new") == Some(&serde_json::Value::Bool(true)) {
                            "admitted"
                        } else {
                            "was already admitted"
                        }
                    );
                    if let Some(r) = &released {
                        text.push_str(&format!("released: {}\n", release_line(r)));
                    }
                    let value = serde_json::json!({"admitted": admitted, "release": released});
                    print(output.json, &value, text);
                })
        }
        PluginCommand::List { output } => client.list().await.map(|v| {
            let text = v
                .get("plugins")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .map(plugin_text)
                .collect::<String>();
            print(output.json, &v, text);
        }),
        PluginCommand::Status { name, output } => client
            .status(&name)
            .await
            .map(|v| print(output.json, &v, plugin_text(&v))),
        PluginCommand::Promote {
            name,
            reason,
            output,
        } => client
            .promote(&name, reason.as_deref())
            .await
            .map(|v| print(output.json, &v, format!("{name}: {}\n", release_line(&v)))),
        PluginCommand::Rollback {
            name,
            reason,
            output,
        } => client
            .rollback(&name, reason.as_deref())
            .await
            .map(|v| print(output.json, &v, format!("{name}: {}\n", release_line(&v)))),
        PluginCommand::History {
            name,
            limit,
            output,
        } => client
            .history(&name, limit)
            .await
            .map(|v| print(output.json, &v, history_text(&v))),
        PluginCommand::Cases { command } => cases_client(&client, command).await,
        PluginCommand::Check { .. } | PluginCommand::New { .. } | PluginCommand::Test { .. } => {
            Ok(())
        }
    };
    exit_code(result)
}

/// `weir plugin cases start|status|export|stop`.
async fn cases_client(
    client: &weir_host::cli::AdminClient,
    command: CasesCommand,
) -> Result<(), weir_host::cli::ClientError> {
    use weir_host::cli::{ClientError, recording_line};
    let line = |v: &serde_json::Value| {
        format!(
            "{}\n",
            recording_line(v.get("recording").unwrap_or(&serde_json::Value::Null))
        )
    };
    match command {
        CasesCommand::Start {
            sample_percent,
            max_cases,
            window_seconds,
            no_redact,
            output,
        } => {
            let spec = serde_json::json!({
                "sample_percent": sample_percent,
                "max_cases": max_cases,
                "window_seconds": window_seconds,
                "redact": !no_redact,
            });
            let v = client.start_recording(&spec).await?;
            print(output.json, &v, line(&v));
            Ok(())
        }
        CasesCommand::Status { output } => {
            let v = client.recording().await?;
            print(output.json, &v, line(&v));
            Ok(())
        }
        CasesCommand::Stop { output } => {
            let v = client.stop_recording().await?;
            print(output.json, &v, format!("stopped: {}", line(&v)));
            Ok(())
        }
        CasesCommand::Export { out } => {
            let v = client.recorded_cases().await?;
            // What the instance sent must be a cases file this binary can replay.
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            let file = weir_host::runtime::cases::CasesFile::parse(text.as_bytes())
                .map_err(|e| ClientError::Local(format!("the instance sent {e}")))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, format!("{text}\n")).map_err(|e| {
                        ClientError::Local(format!("cannot write {}: {e}", path.display()))
                    })?;
                    eprintln!("wrote {} cases to {}", file.cases.len(), path.display());
                }
                None => println!("{text}"),
            }
            Ok(())
        }
    }
}

/// A report as pretty JSON (`--json`) or as its text form.
fn print_report(json: bool, report: &(impl serde::Serialize + std::fmt::Display)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{report}");
    }
}

/// `weir plugin test`.
async fn plugin_test(
    file: &std::path::Path,
    cases: &std::path::Path,
    compare: Option<&std::path::Path>,
    json: bool,
) -> ExitCode {
    match weir_host::cli::cases::test(file, cases, compare).await {
        Ok(report) => {
            print_report(json, &report);
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            use weir_host::runtime::check::escape_terminal_message;
            eprintln!(
                "error: {}",
                escape_terminal_message(&format!("{e:#}"), ERROR_MAX_CHARS)
            );
            ExitCode::from(2)
        }
    }
}

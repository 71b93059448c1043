//! `weir serve --plugin FILE.wasm --watch`: the plugin author's dev loop.
//!
//! The file given with `--plugin` is loaded at start-up as the orders plugin (see
//! `server::load_plugins`). With `--watch`, the [`Watcher`] follows it: when the file has
//! changed and settled, its bytes go through the admission of an operator's upload
//! ([`Releases::admit_from`]: the size bound of `plugins.releases.upload_limit_bytes`, decode,
//! compile through the compiled-artifact cache, imports, contract and world, the `describe`
//! self-test, the version policy, storage by digest), and an admitted component becomes the
//! stable version through the release path operators use ([`Releases::change`], audited
//! with the actor [`ACTOR`]). Each outcome is one readable line on stderr (the plugin's
//! strings escaped as `weir plugin check` shows them, a contract refusal listing its
//! mismatches one per line), one log line, and one count in `weir.plugin.watch.reloads`
//! by `outcome`:
//!
//! At start it prints `weir: serving orders 0.1.0 (sha256:…) from FILE; watching it for
//! changes`. Then:
//!
//! | outcome | when | printed |
//! |---|---|---|
//! | `admitted` | admitted and now serving | `weir: admitted orders 0.2.0 (sha256:…) in 212 ms, now serving` |
//! | `refused` | admission refused it (a stage names why), or it is another plugin | `weir: refused FILE (orders 0.1.0 keeps serving): STAGE: REASON` |
//! | `unchanged` | rewritten with the digest already seen | `weir: FILE unchanged (sha256:…), orders 0.1.0 keeps serving` |
//! | `error` | not the component's fault (another admission running, no free instance for `describe`, the store failed): tried again | `weir: could not admit FILE yet: REASON; trying again` |
//!
//! A refused file never serves: the last good version keeps serving and the next good write
//! is admitted.
//!
//! # Why polling
//!
//! The watcher looks at the file's size, modification time and inode every
//! [`WatchOptions::interval`] (100 ms) rather than subscribing to file-system events
//! (inotify through the `notify` crate): builds replace the file (a new inode linked or
//! renamed into place, or the directory removed by `cargo clean` and made again), which ends
//! a watch on the file and needs the parent directories watched and re-armed; the debounce
//! needs a timer anyway; and one `stat` of one file ten times a second costs nothing. The same
//! code works on every platform and needs no dependency.
//!
//! # Debounce
//!
//! Builds write a component in several steps, so a change is read only once the file has
//! kept the same size, modification time and inode for [`WatchOptions::quiet`] (300 ms)
//! ([`Settle`]); it is read with its size bound checked first and after, and stat-ed again
//! after reading: a file that changed while it was read is read again once it settles. A file
//! that is missing (a build removed it to write it again) is waited for, not an error. A
//! digest already seen (the last one admitted or refused) is not admitted again.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use sha2::{Digest as _, Sha256};
use weir_core::domain::release::{DesiredRelease, ReleaseChange};

use super::check::{SHOWN_MAX_CHARS, contract_text, escape_terminal, escape_terminal_message};
use super::releases::{AdmitError, Releases};
use crate::lifecycle::{WorkerContext, WorkerError};
use crate::world::contract::ContractReport;

/// The actor of releases made by the watcher, in the audit trail.
pub const ACTOR: &str = weir_core::ports::releases::WATCH;

/// Longest reason (an error chain) a printed line shows, in characters of its escaped form.
const REASON_MAX_CHARS: usize = 4096;

/// How long the watcher waits before trying again after an `error` outcome.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often the file is looked at and how long it must stay the same before it is read.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Between two looks at the file.
    pub interval: Duration,
    /// How long a changed file must keep the same size, modification time and inode.
    pub quiet: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            quiet: Duration::from_millis(300),
        }
    }
}

/// What identifies one state of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Size in bytes.
    pub len: u64,
    /// Last modification.
    pub modified: Option<SystemTime>,
    /// Inode (0 where the platform has none): a file replaced by another of the same size
    /// and time is still seen.
    pub inode: u64,
}

impl Fingerprint {
    /// The fingerprint of `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

/// The fingerprint of the file at `path`, `None` when it is missing or not a regular file.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| Fingerprint::of(&m))
}

/// Why the file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is missing (or not a regular file).
    #[error("{0} is missing or not a regular file")]
    Missing(String),
    /// It is larger than the upload limit; nothing of it was read past the limit.
    #[error("the file has {size} bytes, more than plugins.releases.upload_limit_bytes ({limit})")]
    TooLarge {
        /// Its size (at least `limit + 1` when it grew while read).
        size: u64,
        /// The limit.
        limit: usize,
        /// The file's fingerprint.
        fingerprint: Fingerprint,
    },
    /// It changed while it was read.
    #[error("the file changed while it was read")]
    Changed,
    /// The OS refused.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Read the file at `path`, at most `limit` bytes (checked before reading and while reading),
/// with its fingerprint; [`ReadError::Changed`] when it changed while it was read. Blocking.
pub fn read_bounded(path: &Path, limit: usize) -> Result<(Vec<u8>, Fingerprint), ReadError> {
    let shown = path.display().to_string();
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => ReadError::Missing(shown.clone()),
        _ => ReadError::Io {
            path: shown.clone(),
            source,
        },
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::Missing(shown.clone()));
    }
    let before = Fingerprint::of(&meta);
    let too_large = |size: u64| ReadError::TooLarge {
        size,
        limit,
        fingerprint: before,
    };
    if before.len > limit as u64 {
        return Err(too_large(before.len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(before.len).unwrap_or(limit));
    // One byte past the limit tells a file that grew over it from one that ends there.
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > limit {
        return Err(too_large(bytes.len() as u64));
    }
    // The same file (inode), size and time after reading: what was read is one version.
    if fingerprint(path) != Some(before) || bytes.len() as u64 != before.len {
        return Err(ReadError::Changed);
    }
    Ok((bytes, before))
}

/// The debounce: decides, from successive looks at the file, when a change has settled.
#[derive(Debug)]
pub struct Settle {
    quiet: Duration,
    /// The state last handled (admitted, refused, unchanged): nothing to do while it stays.
    done: Option<Fingerprint>,
    /// A new state and since when it has been seen unchanged.
    seen: Option<(Fingerprint, Instant)>,
    /// No read before this (after an `error` outcome).
    not_before: Option<Instant>,
}

/// What to do after one look at the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed since the last handled state, or the file is missing.
    Idle,
    /// Changed, not settled yet.
    Settling,
    /// Changed and settled: read it.
    Read,
}

impl Settle {
    /// A debounce whose file was last handled in state `done`.
    pub fn new(quiet: Duration, done: Option<Fingerprint>) -> Self {
        Self {
            quiet,
            done,
            seen: None,
            not_before: None,
        }
    }

    /// One look at the file at `now` (`None`: missing).
    pub fn observe(&mut self, current: Option<Fingerprint>, now: Instant) -> Step {
        let Some(current) = current else {
            // Waited for: the build is writing it again.
            self.seen = None;
            return Step::Idle;
        };
        if self.done == Some(current) {
            self.seen = None;
            return Step::Idle;
        }
        match self.seen {
            Some((seen, since)) if seen == current => {
                let ready = now.duration_since(since) >= self.quiet
                    && self.not_before.is_none_or(|t| now >= t);
                if ready { Step::Read } else { Step::Settling }
            }
            _ => {
                self.seen = Some((current, now));
                Step::Settling
            }
        }
    }

    /// The state `fingerprint` was handled: nothing more to do until the file changes.
    pub fn handled(&mut self, fingerprint: Fingerprint) {
        self.done = Some(fingerprint);
        self.seen = None;
        self.not_before = None;
    }

    /// The file changed under the reader: wait for it to settle again.
    pub fn unsettled(&mut self) {
        self.seen = None;
    }

    /// Try the same state again, not before `at`.
    pub fn retry_at(&mut self, at: Instant) {
        self.not_before = Some(at);
    }
}

/// `sha256:` and the first 12 hex digits of `digest`, then `…`.
pub fn short_digest(digest: &str) -> String {
    let end = digest
        .char_indices()
        .nth(12)
        .map_or(digest.len(), |(i, _)| i);
    format!("sha256:{}…", &digest[..end])
}

fn shown_path(path: &Path) -> String {
    escape_terminal(&path.display().to_string(), usize::MAX)
}

/// The name and version of a plugin, escaped and cut for the terminal.
pub fn shown_version(name: &str, version: &str) -> String {
    format!(
        "{} {}",
        escape_terminal(name, SHOWN_MAX_CHARS),
        escape_terminal(version, SHOWN_MAX_CHARS)
    )
}

/// The line printed when a component was admitted and serves.
pub fn admitted_line(name: &str, version: &str, digest: &str, new: bool, took: Duration) -> String {
    format!(
        "weir: admitted {} ({}) in {} ms{}, now serving\n",
        shown_version(name, version),
        short_digest(digest),
        took.as_millis(),
        if new { "" } else { " (admitted before)" }
    )
}

/// The lines printed when a component was refused: `weir: refused FILE (... keeps
/// serving): STAGE: REASON`, the mismatches of a contract refusal one per line below it.
/// `serving` is what keeps serving (already escaped), `detail` the refusal's chain.
pub fn refused_text(
    path: &Path,
    serving: &str,
    stage: &str,
    detail: &str,
    contract: Option<&ContractReport>,
) -> String {
    let reason = match contract {
        Some(report) => contract_text(report),
        None => format!("{}\n", escape_terminal_message(detail, REASON_MAX_CHARS)),
    };
    format!(
        "weir: refused {} ({serving} keeps serving): {stage}: {reason}",
        shown_path(path)
    )
}

/// The line printed when the watcher starts: what serves, from which file.
pub fn watching_line(path: &Path, serving: &str, digest: &str) -> String {
    format!(
        "weir: serving {serving} ({}) from {}; watching it for changes\n",
        short_digest(digest),
        shown_path(path)
    )
}

/// The line printed when the file was rewritten with a digest already seen.
pub fn unchanged_line(path: &Path, digest: &str, serving: &str) -> String {
    format!(
        "weir: {} unchanged ({}), {serving} keeps serving\n",
        shown_path(path),
        short_digest(digest)
    )
}

/// The line printed when admission could not judge the component (tried again).
pub fn retry_line(path: &Path, reason: &str) -> String {
    format!(
        "weir: could not admit {} yet: {}; trying again\n",
        shown_path(path),
        escape_terminal_message(reason, REASON_MAX_CHARS)
    )
}

/// Where the readable lines go (stderr; tests may collect them).
pub type Out = Arc<dyn Fn(&str) + Send + Sync>;

/// Readable lines to stderr, each written whole.
pub fn stderr_out() -> Out {
    Arc::new(|text: &str| {
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    })
}

/// What the watcher knows from start-up: the file's state and digest when it was loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file's fingerprint when it was read.
    pub fingerprint: Fingerprint,
    /// The digest of what was read.
    pub digest: String,
}

struct State {
    settle: Settle,
    /// The last digest handled (admitted or refused).
    last_digest: String,
    /// The digest whose `error` outcome was printed (printed once until it changes).
    retrying: Option<String>,
}

/// The outcome of one read, for the counter and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted and serving.
    Admitted,
    /// Refused by admission, or another plugin than the one served.
    Refused,
    /// A digest already seen.
    Unchanged,
    /// Not judged (admission busy, no free instance, the store or the release failed).
    Error,
}

impl Outcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Admitted => "admitted",
            Outcome::Refused => "refused",
            Outcome::Unchanged => "unchanged",
            Outcome::Error => "error",
        }
    }
}

/// Follows the `--plugin` file and swaps admitted versions in (see the module doc).
pub struct Watcher {
    path: PathBuf,
    plugin: String,
    releases: Arc<Releases>,
    options: WatchOptions,
    out: Out,
    reloads: Counter<u64>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("path", &self.path)
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// A watcher of `path`, whose plugin `plugin` serves the orders API and was loaded from
    /// it at start-up as `loaded`.
    pub fn new(
        path: PathBuf,
        plugin: String,
        releases: Arc<Releases>,
        loaded: Loaded,
        options: WatchOptions,
        out: Out,
    ) -> Self {
        Self {
            path,
            plugin,
            releases,
            out,
            reloads: opentelemetry::global::meter("weir.runtime")
                .u64_counter("weir.plugin.watch.reloads")
                .with_description(
                    "Changes of the `weir serve --watch` file handled, by outcome (admitted, \
                     refused, unchanged, error)",
                )
                .build(),
            state: Mutex::new(State {
                settle: Settle::new(options.quiet, Some(loaded.fingerprint)),
                last_digest: loaded.digest,
                retrying: None,
            }),
            options,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `plugins.watch` worker: look at the file every interval until shutdown.
    pub async fn run(self: Arc<Self>, ctx: WorkerContext) -> Result<(), WorkerError> {
        tracing::info!(file = %self.path.display(), plugin = %self.plugin, "watching the plugin file");
        let digest = self.state().last_digest.clone();
        (self.out)(&watching_line(&self.path, &self.serving(), &digest));
        while ctx.sleep(self.options.interval).await {
            let current = fingerprint(&self.path);
            let step = self.state().settle.observe(current, Instant::now());
            if step == Step::Read {
                let _ = ctx.unit(self.reload()).await;
            }
        }
        Ok(())
    }

    /// What serves the plugin now, escaped: `orders 0.1.0`.
    fn serving(&self) -> String {
        match self.releases.registry().pick(&self.plugin) {
            Some(v) => shown_version(&v.meta.name, &v.meta.version),
            None => format!(
                "no version of {}",
                escape_terminal(&self.plugin, SHOWN_MAX_CHARS)
            ),
        }
    }

    fn count(&self, outcome: Outcome) {
        self.reloads
            .add(1, &[KeyValue::new("outcome", outcome.as_str())]);
    }

    /// Read the settled file and handle it: the outcome, `None` when the file changed or
    /// went missing while it was read (it is read again once it settles), `Err` for an
    /// `error` outcome (the worker unit's outcome).
    pub async fn reload(&self) -> Result<Option<Outcome>, String> {
        let started = Instant::now();
        let path = self.path.clone();
        let limit = self.releases.config().upload_limit_bytes;
        let read = tokio::task::spawn_blocking(move || read_bounded(&path, limit))
            .await
            .map_err(|e| format!("the read task failed: {e}"))?;
        let shown = self.path.display().to_string();
        let (bytes, fp) = match read {
            Ok(read) => read,
            Err(ReadError::Missing(_) | ReadError::Changed) => {
                self.state().settle.unsettled();
                return Ok(None);
            }
            Err(e @ ReadError::TooLarge { fingerprint, .. }) => {
                self.state().settle.handled(fingerprint);
                self.refused("size", &e.to_string(), None, None);
                return Ok(Some(Outcome::Refused));
            }
            Err(e @ ReadError::Io { .. }) => {
                let reason = crate::support::chain(&e);
                return Err(self.retry(None, &reason));
            }
        };
        let digest = hex::encode(Sha256::digest(&bytes));
        if self.state().last_digest == digest {
            self.state().settle.handled(fp);
            self.count(Outcome::Unchanged);
            tracing::info!(file = %shown, digest = %digest, outcome = "unchanged", "plugin file rewritten unchanged (watch)");
            (self.out)(&unchanged_line(&self.path, &digest, &self.serving()));
            return Ok(Some(Outcome::Unchanged));
        }
        let admitted = match self.releases.admit_from(bytes, ACTOR, "watch").await {
            Ok(a) => a,
            Err(AdmitError::Refused {
                stage,
                detail,
                contract,
            }) => {
                self.done(fp, &digest);
                self.refused(stage, &detail, contract.as_deref(), Some(&digest));
                return Ok(Some(Outcome::Refused));
            }
            Err(e) => return Err(self.retry(Some(&digest), &crate::support::chain(&e))),
        };
        let c = &admitted.component;
        if c.name != self.plugin {
            self.done(fp, &digest);
            let detail = format!(
                "the component is the plugin {:?}, but this instance serves {:?} as its orders \
                 plugin; restart `weir serve --plugin` to serve another plugin",
                c.name, self.plugin
            );
            self.refused("plugin", &detail, None, Some(&digest));
            return Ok(Some(Outcome::Refused));
        }
        let change = ReleaseChange::Set(DesiredRelease {
            stable: digest.clone(),
            canary: None,
            shadow: None,
        });
        let reason = format!(
            "weir serve --watch: {} changed",
            escape_terminal(&shown, 256)
        );
        if let Err(e) = self
            .releases
            .change(&self.plugin, &change, None, ACTOR, Some(&reason))
            .await
        {
            return Err(self.retry(Some(&digest), &crate::support::chain(&e)));
        }
        if self
            .releases
            .registry()
            .pick(&self.plugin)
            .is_none_or(|v| v.meta.digest != digest)
        {
            return Err(self.retry(
                Some(&digest),
                "released, but not applied here (see the log: `the new release could not be \
                 applied here`)",
            ));
        }
        self.done(fp, &digest);
        let took = started.elapsed();
        self.count(Outcome::Admitted);
        tracing::info!(
            file = %shown,
            plugin = %c.name,
            version = %c.version,
            digest = %c.digest,
            new = admitted.new,
            artifact = admitted.artifact,
            elapsed_ms = took.as_millis() as u64,
            outcome = "admitted",
            "plugin file admitted and serving (watch)"
        );
        (self.out)(&admitted_line(
            &c.name,
            &c.version,
            &c.digest,
            admitted.new,
            took,
        ));
        Ok(Some(Outcome::Admitted))
    }

    fn done(&self, fp: Fingerprint, digest: &str) {
        let mut state = self.state();
        state.settle.handled(fp);
        state.last_digest = digest.to_owned();
        state.retrying = None;
    }

    fn refused(
        &self,
        stage: &str,
        detail: &str,
        contract: Option<&ContractReport>,
        digest: Option<&str>,
    ) {
        self.count(Outcome::Refused);
        tracing::warn!(
            file = %self.path.display(),
            stage,
            error = %detail,
            digest = digest.unwrap_or(""),
            outcome = "refused",
            "plugin file refused (watch); the last good version keeps serving"
        );
        (self.out)(&refused_text(
            &self.path,
            &self.serving(),
            stage,
            detail,
            contract,
        ));
    }

    /// An `error` outcome: counted, logged, printed once per digest, tried again later.
    fn retry(&self, digest: Option<&str>, reason: &str) -> String {
        self.count(Outcome::Error);
        tracing::warn!(file = %self.path.display(), error = %reason, outcome = "error", "plugin file not admitted yet (watch); trying again");
        let print = {
            let mut state = self.state();
            state.settle.retry_at(Instant::now() + RETRY_AFTER);
            let first = digest.is_none() || state.retrying.as_deref() != digest;
            state.retrying = digest.map(str::to_owned);
            first
        };
        if print {
            (self.out)(&retry_line(&self.path, reason));
        }
        reason.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(len: u64) -> Option<Fingerprint> {
        Some(Fingerprint {
            len,
            modified: None,
            inode: 1,
        })
    }

    #[test]
    fn a_change_is_read_only_once_it_stayed_the_same_for_the_quiet_period() {
        let quiet = Duration::from_millis(300);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Settle::new(quiet, fp(10));
        assert_eq!(s.observe(fp(10), at(0)), Step::Idle, "the loaded state");
        // A build writing in steps: every look sees another size, so nothing is read.
        for (i, len) in [100, 200, 300].into_iter().enumerate() {
            assert_eq!(s.observe(fp(len), at(400 * i as u64 + 100)), Step::Settling);
        }
        assert_eq!(s.observe(fp(300), at(1000)), Step::Settling, "100 ms quiet");
        assert_eq!(s.observe(fp(300), at(1199)), Step::Settling, "299 ms quiet");
        assert_eq!(s.observe(fp(300), at(1200)), Step::Read, "300 ms quiet");
        s.handled(fp(300).unwrap());
        assert_eq!(s.observe(fp(300), at(2000)), Step::Idle, "handled");
        // Missing is waited for, and the same state coming back is not read again.
        assert_eq!(s.observe(None, at(2100)), Step::Idle);
        assert_eq!(s.observe(fp(300), at(2200)), Step::Idle);
        // A change under the reader starts the quiet period again.
        assert_eq!(s.observe(fp(400), at(3000)), Step::Settling);
        s.unsettled();
        assert_eq!(s.observe(fp(400), at(3400)), Step::Settling);
        assert_eq!(s.observe(fp(400), at(3700)), Step::Read);
        // After an error, not before the retry time.
        s.retry_at(at(5000));
        assert_eq!(s.observe(fp(400), at(4000)), Step::Settling);
        assert_eq!(s.observe(fp(400), at(5000)), Step::Read);
    }

    #[test]
    fn the_file_is_read_within_the_limit_or_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.wasm");
        std::fs::write(&path, vec![7u8; 2048]).unwrap();
        let (bytes, fp) = read_bounded(&path, 2048).expect("at the limit");
        assert_eq!((bytes.len(), fp.len), (2048, 2048));
        assert_eq!(Some(fp), fingerprint(&path));
        match read_bounded(&path, 2047) {
            Err(ReadError::TooLarge { size, limit, .. }) => assert_eq!((size, limit), (2048, 2047)),
            other => panic!(
                "expected TooLarge, got {:?}",
                other.map(|(bytes, fp)| (bytes.len(), fp))
            ),
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            read_bounded(&path, 2048),
            Err(ReadError::Missing(_))
        ));
        assert_eq!(fingerprint(&path), None);
        assert!(matches!(
            read_bounded(dir.path(), 2048),
            Err(ReadError::Missing(_))
        ));
    }

    #[test]
    fn printed_lines_escape_what_the_plugin_and_the_path_say() {
        let digest = "ab".repeat(32);
        let line = admitted_line(
            "orders",
            "0.2.0\u{1b}[31m",
            &digest,
            true,
            Duration::from_millis(212),
        );
        assert_eq!(
            line,
            "weir: admitted orders 0.2.0\\u{1b}[31m (sha256:abababababab…) in 212 ms, now serving\n"
        );
        assert!(
            admitted_line("orders", "0.1.0", &digest, false, Duration::ZERO)
                .contains("(admitted before), now serving")
        );
        let path = Path::new("/tmp/x\nweir: admitted.wasm");
        let text = refused_text(
            path,
            "orders 0.1.0",
            "decode",
            "not a WebAssembly component: \u{202e}evil\nline",
            None,
        );
        assert_eq!(
            text,
            "weir: refused /tmp/x\\nweir: admitted.wasm (orders 0.1.0 keeps serving): decode: \
             not a WebAssembly component: \\u{202e}evil\\nline\n"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        let long = "x".repeat(10_000);
        assert!(
            refused_text(path, "orders 0.1.0", "describe", &long, None).contains("bytes cut)"),
            "a long reason is cut"
        );
        assert!(unchanged_line(path, &digest, "orders 0.1.0").starts_with("weir: /tmp/x\\nweir"));
    }
}

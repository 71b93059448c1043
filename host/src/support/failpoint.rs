//! Crash failpoints for the process tests: compiled only with the test-only cargo feature
//! `fault-injection` (test builds enable it through `weir-host`'s dev-dependency on itself;
//! `cargo build --release -p weir-host` never does, which `release_build_has_no_fault_injection`
//! in `tests/process/cli.rs` checks).
//!
//! A failpoint is a named place in the code, e.g. `consumer.after_commit`. When the process was
//! started with `WEIR_FAILPOINT=<that name>`, the first task to reach it logs
//! `failpoint reached` (field `failpoint`) and then waits forever, so the test can look at the
//! state of the world in that exact window (a committed transaction whose message is not
//! acked yet) and then `kill -9` the process. Without the variable a failpoint does nothing.
//!
//! Places:
//! - `consumer.after_commit`: the consumer committed a transition (order, outbox event and
//!   inbox record in one transaction) and has not acked the delivery yet.

/// The environment variable naming the armed failpoint.
pub const VARIABLE: &str = "WEIR_FAILPOINT";

/// Stop here for good if `name` is the armed failpoint (see the module doc).
pub async fn hit(name: &'static str) {
    if std::env::var(VARIABLE).is_ok_and(|armed| armed == name) {
        tracing::warn!(
            failpoint = name,
            "failpoint reached; waiting here until the process is killed"
        );
        std::future::pending::<()>().await;
    }
}

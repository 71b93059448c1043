//! The WASI a plugin gets: an allow-list of interfaces, linked one by one, granting nothing.
//!
//! Rust's standard library (and other toolchains' runtimes) import a handful of WASI
//! interfaces even when the plugin never opens a file: stdio for panics and `println!`, the
//! environment and exit for start-up, clocks, and randomness for hash maps. Those are linked,
//! and nothing behind them grants authority: no preopened directories (the filesystem
//! interfaces see no files), an empty environment and argument list, a closed stdin, and
//! stdout/stderr captured into bounded buffers. Everything else — sockets, name lookup, HTTP,
//! any interface not in [`ALLOWED`] — is not in the linker at all, and admission refuses a
//! component that imports it, naming the import ([`check_imports`]).
//!
//! Clocks are coarsened to [`CLOCK_RESOLUTION`] (1 ms): a plugin needs time for deadlines
//! and timestamps, not nanosecond timers for measuring cache or branch timing of the host it
//! shares a process with. Randomness comes from the host's CSPRNG (wasmtime-wasi's default
//! per-store generator seeded from the OS): plugins may need unpredictable values (hash map
//! keys); they are not a secret the host relies on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiView};

use crate::world::PACKAGE;

/// The WASI interfaces a plugin may import (any version of the `wasi:*@0.2` package).
pub const ALLOWED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Resolution of the clocks a plugin reads.
pub const CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

/// Whether an import name (`namespace:package/interface@version`) is allowed: one of
/// [`ALLOWED`], or an interface of the `weir:orders` world.
pub fn is_allowed(import: &str) -> bool {
    let unversioned = import.split('@').next().unwrap_or(import);
    ALLOWED.contains(&unversioned)
        || unversioned
            .strip_prefix(PACKAGE)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The first import of `imports` outside the allow-list, if any.
pub fn check_imports<'a>(imports: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    match imports.into_iter().find(|i| !is_allowed(i)) {
        None => Ok(()),
        Some(import) => Err(import.to_owned()),
    }
}

struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

/// Link exactly the interfaces of [`ALLOWED`] (asynchronous implementations).
pub fn add_to_linker<T: WasiView>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi_io::bindings::wasi::io;

    io::error::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    io::poll::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    io::streams::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    Ok(())
}

/// The wall clock at [`CLOCK_RESOLUTION`].
pub(crate) struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        CLOCK_RESOLUTION
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        coarse(now)
    }
}

/// A monotonic clock at [`CLOCK_RESOLUTION`], counting from the start of the call (a plugin
/// learns nothing about the host's uptime).
pub(crate) struct CoarseMonotonicClock {
    start: std::time::Instant,
}

impl CoarseMonotonicClock {
    /// A clock counting from now.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::since(std::time::Instant::now())
    }

    /// A clock counting from `start`.
    pub(crate) fn since(start: std::time::Instant) -> Self {
        Self { start }
    }
}

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_RESOLUTION.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        // Start at one tick so the first reading is not zero.
        u64::try_from(coarse(self.start.elapsed() + CLOCK_RESOLUTION).as_nanos())
            .unwrap_or(u64::MAX)
    }
}

fn coarse(d: Duration) -> Duration {
    let step = CLOCK_RESOLUTION.as_nanos();
    Duration::from_nanos(u64::try_from(d.as_nanos() / step * step).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_names_interfaces_not_packages() {
        assert!(is_allowed("wasi:cli/stdout@0.2.3"));
        assert!(is_allowed("wasi:io/streams@0.2.0"));
        assert!(is_allowed("weir:orders/catalog@0.1.0"));
        for denied in [
            "wasi:sockets/tcp@0.2.0",
            "wasi:sockets/ip-name-lookup@0.2.0",
            "wasi:http/outgoing-handler@0.2.0",
            "wasi:cli/run@0.2.0",
            "weir:ordersx/catalog@0.1.0",
            "wasi:io",
            "",
        ] {
            assert!(!is_allowed(denied), "{denied}");
        }
        assert_eq!(
            check_imports(["wasi:cli/stdout@0.2.3", "wasi:sockets/tcp@0.2.3"]),
            Err("wasi:sockets/tcp@0.2.3".to_owned())
        );
    }

    #[test]
    fn clocks_tick_in_whole_milliseconds() {
        let wall = CoarseWallClock.now();
        assert_eq!(wall.subsec_nanos() % 1_000_000, 0);
        let mono = CoarseMonotonicClock::new();
        assert_eq!(mono.now() % 1_000_000, 0);
        assert!(mono.now() >= 1_000_000);
        assert_eq!(mono.resolution(), 1_000_000);
    }
}

//! The compiled-artifact cache: a component compiled once is kept in the data directory, so
//! restarts and swaps do not compile it again with Cranelift.
//!
//! An entry is keyed by the component's digest and the engine's compatibility hash (wasmtime's
//! `precompile_compatibility_hash`: its version and every setting that changes the code it
//! generates), one file each: `<dir>/<digest>-<engine>.cwasm`. The file is a header (magic,
//! the sha256 of the payload) followed by wasmtime's serialized component. Before an entry is
//! handed to wasmtime the payload's hash is checked, and wasmtime checks its own header again;
//! a truncated, corrupt or incompatible entry is recompiled and rewritten, never trusted. Files
//! are written to a temporary name and renamed, so a crash never leaves half a file under the
//! final name.
//!
//! Deserializing compiled code is `unsafe` in wasmtime because the bytes must be code wasmtime
//! itself produced: here they are only ever bytes this process (or a previous run of it) wrote
//! into its own data directory, verified by hash. The data directory is trusted like the
//! database next to it (see SECURITY.md); an attacker who can write it can also replace the
//! binary.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Start of every cache file.
const MAGIC: &[u8; 8] = b"WEIRCW01";

/// What the cache did for one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache: nothing compiled.
    Hit,
    /// Not cached (or the cache is off): compiled (and stored when on).
    Miss,
    /// A cached file failed its checks (truncated, corrupt, incompatible): compiled again and
    /// rewritten.
    Corrupt,
    /// The cache is off.
    Off,
}

impl CacheOutcome {
    /// Metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Corrupt => "corrupt",
            CacheOutcome::Off => "off",
        }
    }
}

/// The cache of compiled components.
pub struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
    lookups: Counter<u64>,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .field("engine_key", &self.engine_key)
            .finish_non_exhaustive()
    }
}

impl ArtifactCache {
    /// A cache in `dir` (created when needed) for `engine`; off when `dir` is `None`.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Self {
            dir,
            engine_key: format!("{:016x}", h.finish()),
            lookups: opentelemetry::global::meter("weir.runtime")
                .u64_counter("weir.plugin.artifact.lookups")
                .with_description(
                    "Compiled-artifact cache lookups by outcome (hit, miss, corrupt, off)",
                )
                .build(),
        }
    }

    /// The file of `digest`'s entry.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }

    /// The compiled component of `bytes` (whose sha256 is `digest`): from the cache when a
    /// valid entry exists, else compiled by `compile` and stored. Blocking: call it off the
    /// async threads.
    pub fn load(
        &self,
        engine: &Engine,
        digest: &str,
        compile: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(path) = self.path(digest) else {
            self.count(CacheOutcome::Off);
            return compile().map(|c| (c, CacheOutcome::Off));
        };
        let outcome = match std::fs::read(&path) {
            Ok(file) => match verified_payload(&file) {
                Some(payload) => match deserialize(engine, payload) {
                    Ok(component) => {
                        self.count(CacheOutcome::Hit);
                        return Ok((component, CacheOutcome::Hit));
                    }
                    Err(_) => CacheOutcome::Corrupt,
                },
                None => CacheOutcome::Corrupt,
            },
            Err(_) => CacheOutcome::Miss,
        };
        if outcome == CacheOutcome::Corrupt {
            tracing::warn!(path = %path.display(), "compiled artifact failed its checks; recompiling it");
        }
        let component = compile()?;
        if let Err(e) = store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled artifact; it will be compiled again next time");
        }
        self.count(outcome);
        Ok((component, outcome))
    }

    fn count(&self, outcome: CacheOutcome) {
        self.lookups
            .add(1, &[KeyValue::new("outcome", outcome.as_str())]);
    }
}

/// The payload of a cache file whose header and hash check out.
fn verified_payload(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (hash, payload) = rest.split_at(32);
    (Sha256::digest(payload)[..] == *hash).then_some(payload)
}

/// Hand verified bytes to wasmtime.
#[allow(
    unsafe_code,
    reason = "wasmtime requires compiled code to be its own output: these bytes are what this \
              process serialized into its data directory, checked against their sha256 first \
              (see the module doc)"
)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `payload` passed `verified_payload`: it is byte for byte what `store` wrote from
    // `Component::serialize` of an engine with the same compatibility hash (the file name),
    // and wasmtime re-checks its own header and engine settings before using it.
    unsafe { Component::deserialize(engine, payload) }
}

fn store(path: &Path, component: &Component) -> anyhow::Result<()> {
    let payload = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("cannot serialize the component: {e:#}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&Sha256::digest(&payload));
    file.extend_from_slice(&payload);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, &file)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intact_files_pass() {
        let payload = b"compiled code".to_vec();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(&payload);
        assert_eq!(verified_payload(&file), Some(payload.as_slice()));
        assert_eq!(verified_payload(&file[..file.len() - 1]), None, "truncated");
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(verified_payload(&flipped), None, "corrupt");
        assert_eq!(verified_payload(b"WEIRCW01"), None, "no hash");
        assert_eq!(verified_payload(&payload), None, "no header");
    }
}

//! `weir plugin check FILE.wasm`: validate a component the way admission does, offline.
//!
//! Runs the same steps as loading into a running host (component? implements the world?
//! `describe` self-test passes?) with the default budget and an empty catalog, then prints
//! what an operator needs to know before uploading it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{LoadError, Runtime, RuntimeConfig};
use crate::capabilities::catalog::StaticCatalog;
use crate::world::WORLD;
use crate::world::conversions::capability_name;

/// What `weir plugin check` reports for a valid component.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Name from `describe`.
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// `sha256:<hex>` of the file.
    pub digest: String,
    /// File size in bytes.
    pub size: usize,
    /// Capabilities the plugin declares.
    pub capabilities: Vec<String>,
    /// Component imports.
    pub imports: Vec<String>,
    /// Component exports.
    pub exports: Vec<String>,
}

/// Check the component at `path`.
pub async fn check(path: &Path) -> Result<CheckReport, LoadError> {
    let runtime = Runtime::new(
        RuntimeConfig {
            max_instances: 4,
            ..RuntimeConfig::default()
        },
        Arc::new(StaticCatalog::default()),
    )
    .map_err(|e| LoadError::Invalid(e.to_string()))?;
    let version = runtime.load_file(path, |_| BTreeMap::new()).await?;
    Ok(CheckReport {
        name: version.meta.name.clone(),
        version: version.meta.version.clone(),
        digest: format!("sha256:{}", version.meta.digest),
        size: version.size,
        capabilities: version
            .capabilities
            .iter()
            .map(|c| capability_name(*c).to_owned())
            .collect(),
        imports: version.imports.clone(),
        exports: version.exports.clone(),
    })
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ok: {} {} implements {WORLD}", self.name, self.version)?;
        writeln!(f, "  digest:       {}", self.digest)?;
        writeln!(f, "  size:         {} bytes", self.size)?;
        writeln!(f, "  capabilities: {}", self.capabilities.join(", "))?;
        writeln!(f, "  imports:")?;
        for i in &self.imports {
            writeln!(f, "    {i}")?;
        }
        writeln!(f, "  exports:")?;
        for e in &self.exports {
            writeln!(f, "    {e}")?;
        }
        Ok(())
    }
}

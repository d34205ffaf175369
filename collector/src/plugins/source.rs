//! Scrape-time metric sources: a plugin that reads the kernel's state when
//! `/metrics` is scraped (Retina's linuxutil-style metrics) implements
//! [`Source`]; [`super::status::PluginsCollector`] reads every enabled one
//! and records whether the read worked in the plugin's status.

use std::path::PathBuf;

/// Prefix of Retina's metric names, added to every source's gauges.
pub const PREFIX: &str = "networkobservability";
/// Retina's label naming a kernel statistic (linuxutil's and `interface_stats`).
pub const STATISTIC_NAME: &str = "statistic_name";

/// One gauge family read from the kernel: its name (without the Retina prefix),
/// help, and samples (label pairs, value).
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub samples: Vec<(Vec<(&'static str, String)>, i64)>,
}

/// A kernel metric source.
pub trait Source: std::fmt::Debug + Send + Sync {
    /// Reads the kernel's state now; the error says why it could not.
    fn read(&self) -> Result<Vec<GaugeFamily>, String>;
}

/// Where the sources read: the proc and sys filesystems (of the node's network
/// namespace in a deployment; of a test's namespace in tests).
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

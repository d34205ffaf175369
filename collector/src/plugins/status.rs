//! Each plugin's state, one mechanism for the preflight and `/metrics`:
//! `flowlake_collector_plugin_status{plugin,state}` is 1 for the plugin's
//! current state and 0 for the others. The datapath writes the states of the
//! eBPF plugins when it loads them ([`derive`]); the scrape-time sources write
//! theirs at every read ([`PluginsCollector`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Serialize;

use super::registry::PluginSet;
use super::report::LoadReport;
use super::source::Source;

/// Name of the status family.
pub const STATUS_METRIC: &str = "flowlake_collector_plugin_status";

/// A plugin's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// Enabled and everything of it runs.
    Enabled,
    /// Not in `--plugins`: nothing of it is loaded or read.
    Disabled,
    /// Runs in a reduced form (the reason says how).
    Degraded,
    /// Enabled but nothing of it runs (the reason says why).
    Failed,
}

impl PluginState {
    pub const ALL: [PluginState; 4] = [
        PluginState::Enabled,
        PluginState::Disabled,
        PluginState::Degraded,
        PluginState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Enabled => "enabled",
            PluginState::Disabled => "disabled",
            PluginState::Degraded => "degraded",
            PluginState::Failed => "failed",
        }
    }
}

/// One plugin's state and the reason for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    pub plugin: &'static str,
    pub state: PluginState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Each plugin's state and reason.
type States = BTreeMap<&'static str, (PluginState, Option<String>)>;

/// The states of a plugin set, shared by its clones.
#[derive(Clone, Default)]
pub struct StatusBoard(Arc<Mutex<States>>);

impl StatusBoard {
    pub fn set(&self, plugin: &'static str, state: PluginState, reason: Option<String>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(plugin, (state, reason));
        }
    }

    pub fn get(&self, plugin: &str) -> Option<(PluginState, Option<String>)> {
        self.0.lock().ok()?.get(plugin).cloned()
    }
}

/// The state of every plugin of `set` from what loading the objects found:
/// disabled when not selected; failed when a plugin it needs is not enabled or
/// none of its programs runs; degraded when some of them do not run or the
/// kernel calls for a reduced form; enabled otherwise. Plugins without
/// programs (scrape-time sources, record consumers) keep their state.
pub fn derive(set: &PluginSet, report: &LoadReport) {
    for p in set.known() {
        let name = p.name();
        if !set.enabled(name) {
            set.board().set(name, PluginState::Disabled, None);
            continue;
        }
        if let Some(missing) = p.needs().iter().find(|n| !set.enabled(n)) {
            let reason = format!("needs the {missing} plugin, which is not enabled");
            set.board().set(name, PluginState::Failed, Some(reason));
            continue;
        }
        let mut programs: Vec<&str> = p
            .capabilities()
            .iter()
            .flat_map(|c| c.programs.iter().copied())
            .collect();
        programs.sort_unstable();
        programs.dedup();
        if programs.is_empty() {
            continue;
        }
        let statuses: Vec<_> = programs
            .iter()
            .filter_map(|n| report.programs.iter().find(|s| s.program == *n))
            .collect();
        let down: Vec<String> = programs
            .iter()
            .filter(|n| !statuses.iter().any(|s| s.program == **n && s.running))
            .map(|n| {
                let why = statuses
                    .iter()
                    .find(|s| s.program == *n)
                    .and_then(|s| s.reason.clone())
                    .unwrap_or_else(|| "not loaded".into());
                format!("{n}: {why}")
            })
            .collect();
        let degraded = report.degraded.iter().find(|d| d.feature == name);
        let (state, reason) = if down.len() == programs.len() {
            (PluginState::Failed, Some(down.join("; ")))
        } else if !down.is_empty() {
            (PluginState::Degraded, Some(down.join("; ")))
        } else if let Some(d) = degraded {
            (PluginState::Degraded, Some(d.reason.clone()))
        } else {
            (PluginState::Enabled, None)
        };
        set.board().set(name, state, reason);
    }
}

fn gauge_family<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &'a str,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, MetricType::Gauge)
}

/// The scrape-time part of the plugins in `/metrics`: every enabled source's
/// gauges (read now) and every plugin's status, registered once at the root.
#[derive(Debug)]
pub struct PluginsCollector {
    pub set: PluginSet,
    pub sources: Vec<(&'static str, Box<dyn Source>)>,
}

impl PluginsCollector {
    /// The enabled sources of `set`, reading under `roots`.
    pub fn new(set: &PluginSet, roots: &super::Roots) -> Self {
        let sources = set
            .enabled_plugins()
            .filter_map(|p| p.source(roots).map(|s| (p.name(), s)))
            .collect();
        PluginsCollector {
            set: set.clone(),
            sources,
        }
    }
}

impl Collector for PluginsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, source) in &self.sources {
            match source.read() {
                Ok(families) => {
                    self.set.board().set(name, PluginState::Enabled, None);
                    for f in families {
                        let full = format!("{}_{}", super::source::PREFIX, f.name);
                        let mut family = gauge_family(&mut encoder, &full, f.help)?;
                        for (labels, v) in &f.samples {
                            let labels: Vec<(&str, &str)> =
                                labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                            ConstGauge::new(*v).encode(family.encode_family(&labels)?)?;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(plugin = name, error = %e, "metric source unreadable");
                    self.set.board().set(name, PluginState::Failed, Some(e));
                }
            }
        }
        let mut family = gauge_family(
            &mut encoder,
            STATUS_METRIC,
            "Collector plugins (--plugins): 1 for each plugin's current state (enabled, disabled, degraded, failed)",
        )?;
        for s in self.set.statuses() {
            for state in PluginState::ALL {
                let labels = [("plugin", s.plugin), ("state", state.as_str())];
                ConstGauge::new(i64::from(s.state == state))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn sources_read_at_scrape_and_every_state_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        std::fs::write(dir.path().join("net/nf_conntrack"), "").unwrap();
        let roots = crate::plugins::Roots {
            proc: dir.path().into(),
            sys: dir.path().join("no-sys"),
        };
        let set = PluginSet::select(&["conntrack", "interface_stats", "flows"]).unwrap();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PluginsCollector::new(&set, &roots)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"flowlake_collector_plugin_status{plugin="conntrack",state="enabled"} 1"#,
            r#"flowlake_collector_plugin_status{plugin="interface_stats",state="failed"} 1"#,
            r#"flowlake_collector_plugin_status{plugin="interface_stats",state="enabled"} 0"#,
            r#"flowlake_collector_plugin_status{plugin="tcp_connection_remote",state="disabled"} 1"#,
            r#"flowlake_collector_plugin_status{plugin="drops",state="disabled"} 1"#,
            "networkobservability_conntrack_total_connections 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("networkobservability_interface_stats"));
        assert!(!text.contains("networkobservability_tcp_connection_remote"));
        let failed = set.board().get("interface_stats").unwrap();
        assert!(
            failed.1.unwrap().contains("no-sys/class/net"),
            "reason kept"
        );
    }
}

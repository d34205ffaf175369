//! Kernel metric sources read at scrape time, each enabled by name
//! (`--metrics-sources`) and each with a status in `/metrics`:
//! `flowlake_collector_retina_source_enabled{source}` (1 enabled, 0 not) and
//! `flowlake_collector_retina_source_up{source}` (1 when this scrape's read
//! succeeded, 0 when it failed; absent when disabled). A source is one file
//! ([`interface_stats`](super::interface_stats), [`conntrack`](super::conntrack),
//! [`tcp_remote`](super::tcp_remote)) implementing [`Source`]; a later plugin
//! registry can pick them up by [`SourceName`].

use std::path::PathBuf;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::names;

/// The kernel metric sources, by their Retina names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum SourceName {
    /// `interface_stats{interface_name, statistic_name}` from /sys/class/net/*/statistics.
    #[value(name = "interface_stats")]
    InterfaceStats,
    /// `conntrack_packets_tx/rx`, `conntrack_bytes_tx/rx`, `conntrack_total_connections`
    /// from the kernel's conntrack table (/proc/net/nf_conntrack).
    #[value(name = "conntrack")]
    Conntrack,
    /// `tcp_connection_remote{address, port}` from /proc/net/tcp and tcp6.
    #[value(name = "tcp_connection_remote")]
    TcpConnectionRemote,
}

impl SourceName {
    pub const ALL: [SourceName; 3] = [
        SourceName::InterfaceStats,
        SourceName::Conntrack,
        SourceName::TcpConnectionRemote,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceName::InterfaceStats => "interface_stats",
            SourceName::Conntrack => "conntrack",
            SourceName::TcpConnectionRemote => "tcp_connection_remote",
        }
    }
}

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
    fn name(&self) -> SourceName;
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

/// Builds the enabled sources.
pub fn build(enabled: &[SourceName], roots: &Roots) -> Vec<Box<dyn Source>> {
    let mut enabled = enabled.to_vec();
    enabled.sort();
    enabled.dedup();
    enabled
        .into_iter()
        .map(|s| -> Box<dyn Source> {
            match s {
                SourceName::InterfaceStats => Box::new(super::interface_stats::InterfaceStats {
                    sys_root: roots.sys.clone(),
                }),
                SourceName::Conntrack => Box::new(super::conntrack::Conntrack {
                    proc_root: roots.proc.clone(),
                }),
                SourceName::TcpConnectionRemote => Box::new(super::tcp_remote::TcpRemote {
                    proc_root: roots.proc.clone(),
                }),
            }
        })
        .collect()
}

/// The enabled sources as one scrape-time collector (registered at the root).
#[derive(Debug)]
pub struct SourcesCollector {
    pub sources: Vec<Box<dyn Source>>,
}

fn gauge_descriptor<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &'a str,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, MetricType::Gauge)
}

impl Collector for SourcesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut up = Vec::new();
        for source in &self.sources {
            let name = source.name().as_str();
            match source.read() {
                Ok(families) => {
                    up.push((name, 1));
                    for f in families {
                        let full = format!("{}_{}", names::PREFIX, f.name);
                        let mut family = gauge_descriptor(&mut encoder, &full, f.help)?;
                        for (labels, v) in &f.samples {
                            let labels: Vec<(&str, &str)> =
                                labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                            ConstGauge::new(*v).encode(family.encode_family(&labels)?)?;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(source = name, error = %e, "metric source unreadable");
                    up.push((name, 0));
                }
            }
        }
        let enabled = format!("{}_source_enabled", names::SELF_PREFIX);
        let mut family = gauge_descriptor(
            &mut encoder,
            &enabled,
            "Kernel metric sources: 1 enabled (--metrics-sources), 0 not",
        )?;
        for s in SourceName::ALL {
            let on = self.sources.iter().any(|x| x.name() == s);
            ConstGauge::new(i64::from(on))
                .encode(family.encode_family(&[(names::SOURCE, s.as_str())])?)?;
        }
        let up_name = format!("{}_source_up", names::SELF_PREFIX);
        let mut family = gauge_descriptor(
            &mut encoder,
            &up_name,
            "Kernel metric sources: 1 when this scrape read it, 0 when the read failed",
        )?;
        for (name, v) in up {
            ConstGauge::new(v).encode(family.encode_family(&[(names::SOURCE, name)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn status_says_enabled_and_whether_the_read_worked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        std::fs::write(dir.path().join("net/nf_conntrack"), "").unwrap();
        let roots = Roots {
            proc: dir.path().into(),
            sys: dir.path().join("no-sys"),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SourcesCollector {
            sources: build(&[SourceName::Conntrack, SourceName::InterfaceStats], &roots),
        }));
        let text = super::super::encode(&registry).unwrap();
        for line in [
            r#"flowlake_collector_retina_source_enabled{source="conntrack"} 1"#,
            r#"flowlake_collector_retina_source_enabled{source="interface_stats"} 1"#,
            r#"flowlake_collector_retina_source_enabled{source="tcp_connection_remote"} 0"#,
            r#"flowlake_collector_retina_source_up{source="conntrack"} 1"#,
            r#"flowlake_collector_retina_source_up{source="interface_stats"} 0"#,
            "networkobservability_conntrack_total_connections 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("source_up{source=\"tcp_connection_remote\"}"));
        assert!(!text.contains("networkobservability_interface_stats"));
    }
}

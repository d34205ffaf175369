//! Sink settings: `--sinks ingester,ipfix,jsonl` and each sink's flags
//! (`FLOWLAKE_COLLECTOR_*`) → [`SinkConfig`].

use std::path::PathBuf;
use std::time::Duration;

use super::ipfix::{IpfixConfig, Transport};
use super::jsonl::JsonlConfig;

/// A sink by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum SinkKind {
    /// The Flowlake ingester (Arrow batches, on-disk spool).
    Ingester,
    /// IPFIX (RFC 7011) to a collector over UDP or TCP.
    Ipfix,
    /// A JSON-lines flow log file with size-based rotation.
    Jsonl,
}

/// Resolved sink settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    pub sinks: Vec<SinkKind>,
    /// Batches each sink's queue holds before batches for it are dropped.
    pub queue_batches: usize,
    pub ipfix: Option<IpfixConfig>,
    pub jsonl: JsonlConfig,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            sinks: vec![SinkKind::Ingester],
            queue_batches: 64,
            ipfix: None,
            jsonl: JsonlConfig {
                path: PathBuf::from("/var/log/flowlake/flows.jsonl"),
                max_bytes: 64 << 20,
                max_files: 5,
                compress: true,
            },
        }
    }
}

impl SinkConfig {
    /// Whether `kind` is enabled.
    pub fn has(&self, kind: SinkKind) -> bool {
        self.sinks.contains(&kind)
    }
}

/// Sink flags of `flowlake collector` / `standalone`.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// Where flow records go; several at once, each with its own queue.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_SINKS",
        value_enum,
        value_delimiter = ',',
        default_value = "ingester"
    )]
    pub sinks: Vec<SinkKind>,
    /// Batches queued per sink; beyond it that sink's batches are dropped and counted.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_SINK_QUEUE_BATCHES",
        default_value_t = 64
    )]
    pub sink_queue_batches: usize,
    /// IPFIX collector, `host:port` (required with `--sinks …ipfix`).
    #[arg(long, env = "FLOWLAKE_COLLECTOR_IPFIX_TARGET")]
    pub ipfix_target: Option<String>,
    /// IPFIX transport.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_IPFIX_TRANSPORT",
        value_enum,
        default_value = "udp"
    )]
    pub ipfix_transport: Transport,
    /// UDP: how often the templates are sent again.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_IPFIX_TEMPLATE_REFRESH", value_parser = humantime::parse_duration, default_value = "60s")]
    pub ipfix_template_refresh: Duration,
    /// Observation domain id of the messages.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_IPFIX_OBSERVATION_DOMAIN",
        default_value_t = 1
    )]
    pub ipfix_observation_domain: u32,
    /// Private Enterprise Number of the Kubernetes-name elements (32473: RFC 5612's
    /// documentation number, until Flowlake has its own).
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_IPFIX_ENTERPRISE_NUMBER",
        default_value_t = 32473
    )]
    pub ipfix_enterprise_number: u32,
    /// Largest IPFIX message in bytes (default: 1400 over UDP, 65535 over TCP).
    #[arg(long, env = "FLOWLAKE_COLLECTOR_IPFIX_MAX_MESSAGE_BYTES")]
    pub ipfix_max_message_bytes: Option<usize>,
    /// The JSON-lines flow log.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_JSONL_PATH",
        default_value = "/var/log/flowlake/flows.jsonl"
    )]
    pub jsonl_path: PathBuf,
    /// Rotate the flow log at this size (bytes).
    #[arg(long, env = "FLOWLAKE_COLLECTOR_JSONL_MAX_BYTES", default_value_t = 64 << 20)]
    pub jsonl_max_bytes: u64,
    /// Rotated flow logs kept.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_JSONL_MAX_FILES", default_value_t = 5)]
    pub jsonl_max_files: usize,
    /// Gzip rotated flow logs.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_JSONL_COMPRESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub jsonl_compress: bool,
}

impl From<SinkArgs> for SinkConfig {
    fn from(a: SinkArgs) -> Self {
        let ipfix = a.ipfix_target.map(|target| {
            let mut c = IpfixConfig::new(target, a.ipfix_transport);
            c.template_refresh = a.ipfix_template_refresh;
            c.observation_domain = a.ipfix_observation_domain;
            c.enterprise_number = a.ipfix_enterprise_number;
            if let Some(m) = a.ipfix_max_message_bytes {
                c.max_message_bytes = m;
            }
            c
        });
        let mut sinks = a.sinks;
        sinks.dedup();
        SinkConfig {
            sinks,
            queue_batches: a.sink_queue_batches,
            ipfix,
            jsonl: JsonlConfig {
                path: a.jsonl_path,
                max_bytes: a.jsonl_max_bytes,
                max_files: a.jsonl_max_files,
                compress: a.jsonl_compress,
            },
        }
    }
}

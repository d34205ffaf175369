//! Retina-compatible metrics settings: clap flags (`FLOWLAKE_COLLECTOR_METRICS_*`) →
//! [`RetinaConfig`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Which pod-level metrics are produced (Retina's three modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsMode {
    /// Node-level metrics only.
    Basic,
    /// Node level plus `adv_*` with `source_*` and `destination_*` context labels.
    Remote,
    /// Node level plus `adv_*` labelled with the local pod only (no `source_`/`destination_` prefix).
    Local,
}

/// A context label option of Retina's `contextOptions` (`sourceLabels`, `destinationLabels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum ContextLabel {
    Ip,
    Namespace,
    Podname,
    /// Expands to `workload_kind` and `workload_name`.
    Workload,
    Service,
    Port,
    Zone,
}

/// Resolved settings of the Retina-compatible metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RetinaConfig {
    /// Address of the `/metrics` endpoint (Retina serves on :10093).
    pub listen: SocketAddr,
    pub mode: MetricsMode,
    /// Context labels of the sending end (remote mode) or the local pod (local mode).
    pub source_labels: Vec<ContextLabel>,
    /// Context labels of the receiving end (remote mode).
    pub destination_labels: Vec<ContextLabel>,
    /// Only these namespaces get pod-level series (empty: all).
    pub include_namespaces: Vec<String>,
    /// These namespaces never get pod-level series.
    pub exclude_namespaces: Vec<String>,
    /// Upper bound of `adv_*` series; updates that would create more are counted in
    /// `flowlake_collector_retina_series_rejected_total` and not recorded.
    pub max_series: usize,
    /// `adv_*` series not updated for this long are removed.
    pub series_ttl: Duration,
    /// Addresses of the Kubernetes API server (latency histograms); empty: discovered
    /// from the cluster's `kubernetes` Service and its EndpointSlices.
    pub apiserver_ips: Vec<IpAddr>,
    /// Root of the proc filesystem (`net/snmp`, `net/netstat`, `net/tcp`, `net/tcp6`,
    /// `net/nf_conntrack`).
    pub proc_root: PathBuf,
    /// Root of the sys filesystem (`class/net/*/statistics`).
    pub sys_root: PathBuf,
    /// The plugins enabled (`--plugins`: the scrape-time sources and
    /// `apiserver`), and where their states are reported.
    pub plugins: crate::plugins::PluginSet,
}

impl Default for RetinaConfig {
    fn default() -> Self {
        RetinaConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 10093)),
            mode: MetricsMode::Remote,
            source_labels: vec![
                ContextLabel::Namespace,
                ContextLabel::Podname,
                ContextLabel::Workload,
            ],
            destination_labels: vec![
                ContextLabel::Namespace,
                ContextLabel::Podname,
                ContextLabel::Workload,
            ],
            include_namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            max_series: 20_000,
            series_ttl: Duration::from_secs(300),
            apiserver_ips: Vec::new(),
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            // The agent sets the `--plugins` selection (a datapath flag).
            plugins: crate::plugins::PluginSet::default(),
        }
    }
}

impl RetinaConfig {
    /// Remote context with every label, a small series bound, an ephemeral port and
    /// fixtures under `proc_root`.
    pub fn for_tests(proc_root: PathBuf) -> Self {
        RetinaConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            source_labels: vec![
                ContextLabel::Ip,
                ContextLabel::Namespace,
                ContextLabel::Podname,
                ContextLabel::Workload,
                ContextLabel::Service,
                ContextLabel::Port,
                ContextLabel::Zone,
            ],
            destination_labels: vec![ContextLabel::Namespace, ContextLabel::Podname],
            max_series: 1_000,
            series_ttl: Duration::from_secs(60),
            proc_root,
            ..RetinaConfig::default()
        }
    }
}

/// Metrics flags of `flowlake collector` / `standalone`.
#[derive(Debug, Clone, clap::Args)]
pub struct RetinaArgs {
    /// Address of the Retina-compatible `/metrics` endpoint.
    #[arg(
        long = "metrics-listen",
        env = "FLOWLAKE_COLLECTOR_METRICS_LISTEN",
        default_value = "0.0.0.0:10093"
    )]
    pub listen: SocketAddr,
    /// basic (node level), remote (adv_* with source/destination context) or local (adv_* with the local pod).
    #[arg(
        id = "metrics_mode",
        long = "metrics-mode",
        env = "FLOWLAKE_COLLECTOR_METRICS_MODE",
        value_enum,
        default_value = "remote"
    )]
    pub mode: MetricsMode,
    /// Context labels of the source (or local pod): ip,namespace,podname,workload,service,port,zone.
    #[arg(
        long = "metrics-source-labels",
        env = "FLOWLAKE_COLLECTOR_METRICS_SOURCE_LABELS",
        value_enum,
        value_delimiter = ',',
        default_value = "namespace,podname,workload"
    )]
    pub source_labels: Vec<ContextLabel>,
    /// Context labels of the destination.
    #[arg(
        long = "metrics-destination-labels",
        env = "FLOWLAKE_COLLECTOR_METRICS_DESTINATION_LABELS",
        value_enum,
        value_delimiter = ',',
        default_value = "namespace,podname,workload"
    )]
    pub destination_labels: Vec<ContextLabel>,
    /// Only these namespaces get pod-level series (comma-separated; empty: all).
    #[arg(
        long = "metrics-include-namespaces",
        env = "FLOWLAKE_COLLECTOR_METRICS_INCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub include_namespaces: Vec<String>,
    /// These namespaces never get pod-level series.
    #[arg(
        long = "metrics-exclude-namespaces",
        env = "FLOWLAKE_COLLECTOR_METRICS_EXCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub exclude_namespaces: Vec<String>,
    /// Maximum number of adv_* series.
    #[arg(
        long = "metrics-max-series",
        env = "FLOWLAKE_COLLECTOR_METRICS_MAX_SERIES",
        default_value_t = 20_000
    )]
    pub max_series: usize,
    /// Idle adv_* series are removed after this long.
    #[arg(long = "metrics-series-ttl", env = "FLOWLAKE_COLLECTOR_METRICS_SERIES_TTL", value_parser = humantime::parse_duration, default_value = "5m")]
    pub series_ttl: Duration,
    /// API server addresses (comma-separated) for the latency histograms; overrides
    /// discovery from the `kubernetes` Service and its EndpointSlices.
    #[arg(
        long = "metrics-apiserver-ips",
        env = "FLOWLAKE_COLLECTOR_METRICS_APISERVER_IPS",
        value_delimiter = ','
    )]
    pub apiserver_ips: Vec<IpAddr>,
    /// Root of the proc filesystem read for tcp_state and the *_connection_stats.
    #[arg(
        long = "metrics-proc-root",
        env = "FLOWLAKE_COLLECTOR_METRICS_PROC_ROOT",
        default_value = "/proc"
    )]
    pub proc_root: PathBuf,
    /// Root of the sys filesystem read for interface_stats.
    #[arg(
        long = "metrics-sys-root",
        env = "FLOWLAKE_COLLECTOR_METRICS_SYS_ROOT",
        default_value = "/sys"
    )]
    pub sys_root: PathBuf,
}

impl From<RetinaArgs> for RetinaConfig {
    fn from(a: RetinaArgs) -> Self {
        RetinaConfig {
            listen: a.listen,
            mode: a.mode,
            source_labels: a.source_labels,
            destination_labels: a.destination_labels,
            include_namespaces: a.include_namespaces,
            exclude_namespaces: a.exclude_namespaces,
            max_series: a.max_series,
            series_ttl: a.series_ttl,
            apiserver_ips: a.apiserver_ips,
            proc_root: a.proc_root,
            sys_root: a.sys_root,
            // The agent sets the `--plugins` selection (a datapath flag).
            plugins: crate::plugins::PluginSet::default(),
        }
    }
}

//! Enricher settings: clap flags (`FLOWLAKE_COLLECTOR_*`) → [`EnrichConfig`].

use std::path::PathBuf;
use std::time::Duration;

/// Where identities come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrichSource {
    /// No enrichment.
    None,
    /// Watch the cluster (in-cluster service account or kubeconfig).
    Kubernetes,
    /// The cluster if a Kubernetes configuration is found, otherwise none.
    Auto,
    /// A static YAML or JSON file of IP → identity.
    StaticFile(PathBuf),
}

/// Resolved enricher settings.
#[derive(Debug, Clone)]
pub struct EnrichConfig {
    pub source: EnrichSource,
    /// Label keys copied into identities.
    pub label_allow: Vec<String>,
    /// How long a deleted pod (service, node) keeps naming its address.
    pub delete_grace: Duration,
}

/// Labels kept by default: the usual application labels, not hashes or versions of templates.
pub const DEFAULT_LABELS: &[&str] = &[
    "app",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "version",
];

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            source: EnrichSource::Auto,
            label_allow: DEFAULT_LABELS.iter().map(|s| s.to_string()).collect(),
            delete_grace: Duration::from_secs(120),
        }
    }
}

impl EnrichConfig {
    /// Watching a (fake) cluster with a short grace period.
    pub fn for_tests() -> Self {
        EnrichConfig {
            source: EnrichSource::Kubernetes,
            delete_grace: Duration::from_secs(30),
            ..EnrichConfig::default()
        }
    }
}

/// `--enrich` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EnrichMode {
    Auto,
    Kube,
    Static,
    None,
}

/// Enrichment flags of `flowlake collector` / `standalone`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnrichArgs {
    /// Where identities come from: the cluster (kube), a file (static), none, or auto
    /// (the cluster when a Kubernetes configuration is found).
    #[arg(
        long = "enrich",
        env = "FLOWLAKE_COLLECTOR_ENRICH",
        value_enum,
        default_value = "auto"
    )]
    pub mode: EnrichMode,
    /// Static IP → identity file (YAML or JSON) for `--enrich static`.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_IDENTITY_FILE",
        required_if_eq("mode", "static")
    )]
    pub identity_file: Option<PathBuf>,
    /// Pod and service label keys copied into flows (comma-separated).
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_LABEL_ALLOW",
        value_delimiter = ',',
        default_value = "app,app.kubernetes.io/name,app.kubernetes.io/instance,app.kubernetes.io/component,version"
    )]
    pub label_allow: Vec<String>,
    /// How long a deleted pod keeps naming its address (for its late flows).
    #[arg(long, env = "FLOWLAKE_COLLECTOR_DELETE_GRACE", value_parser = humantime::parse_duration, default_value = "2m")]
    pub delete_grace: Duration,
}

impl From<EnrichArgs> for EnrichConfig {
    fn from(a: EnrichArgs) -> Self {
        let source = match (a.mode, a.identity_file) {
            (EnrichMode::Static, Some(p)) => EnrichSource::StaticFile(p),
            (EnrichMode::Static, None) | (EnrichMode::None, _) => EnrichSource::None,
            (EnrichMode::Kube, _) => EnrichSource::Kubernetes,
            (EnrichMode::Auto, Some(p)) => EnrichSource::StaticFile(p),
            (EnrichMode::Auto, None) => EnrichSource::Auto,
        };
        EnrichConfig {
            source,
            label_allow: a
                .label_allow
                .into_iter()
                .filter(|l| !l.is_empty())
                .collect(),
            delete_grace: a.delete_grace,
        }
    }
}

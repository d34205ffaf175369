//! Command-line flags of `flowlake query` and the plain configuration behind them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flowlake_service::tls::TlsFiles;
use flowlake_service::{AuditSink, AuditSql, TracingSink};

use crate::capture::CaptureSettings;
use crate::engine::EngineConfig;
use crate::export::ExportPolicy;
pub use crate::limits::QueryLimits;
use crate::location::parse_key_value;
pub use crate::location::{TableArgs, TableLocation};
use crate::rollup::policy::RollupPolicy;

/// `flowlake query`: SQL over HTTP, per-pod questions and the Grafana datasource.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:7080", env = "FLOWLAKE_QUERY_LISTEN")]
    pub listen: SocketAddr,
    /// Also serve Arrow Flight SQL (gRPC) on this address; off when not set.
    #[arg(long, env = "FLOWLAKE_QUERY_FLIGHT_LISTEN")]
    pub flight_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub table: TableArgs,
    /// How old the table snapshot may be before a query reloads it (0s: every query).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, env = "FLOWLAKE_QUERY_SNAPSHOT_MAX_AGE")]
    pub snapshot_max_age: Duration,
    /// Memory pool shared by all running queries, in bytes.
    #[arg(long, default_value_t = 2 << 30, env = "FLOWLAKE_QUERY_MEMORY_LIMIT")]
    pub memory_limit: usize,
    /// Wall-clock limit of one query, planning and streaming included.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "FLOWLAKE_QUERY_TIMEOUT")]
    pub timeout: Duration,
    /// Largest number of rows one query may return.
    #[arg(long, default_value_t = 1_000_000, env = "FLOWLAKE_QUERY_MAX_ROWS")]
    pub max_rows: usize,
    /// Queries planned or running at once; more wait for a slot until their timeout
    /// (then 503 `busy`).
    #[arg(long, default_value_t = 4, env = "FLOWLAKE_QUERY_MAX_CONCURRENT")]
    pub max_concurrent_queries: usize,
    /// Memory for Parquet footers and page indexes kept between queries, in bytes
    /// (a flows file takes 0.18 MB with 0.4 M rows, 0.37 MB with 1 M; beyond it, least
    /// recently used out).
    #[arg(long, default_value_t = 256 << 20, env = "FLOWLAKE_QUERY_METADATA_CACHE")]
    pub metadata_cache: usize,
    /// DataFusion target partitions (parallelism); default: all cores.
    #[arg(long, env = "FLOWLAKE_QUERY_TARGET_PARTITIONS")]
    pub target_partitions: Option<usize>,
    /// Largest number of export jobs kept in memory with their status.
    #[arg(long, default_value_t = 100, env = "FLOWLAKE_QUERY_MAX_EXPORT_JOBS")]
    pub max_export_jobs: usize,
    /// Answer the per-pod questions from hourly rollups where they are current
    /// (`false`: always from the flow rows).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "FLOWLAKE_QUERY_ROLLUPS")]
    pub rollups: bool,
    /// Read the flow table's few-valued names (namespace, pod, verdict, …) as Arrow
    /// dictionaries (`false`: every string column as `Utf8View`, as before).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "FLOWLAKE_QUERY_DICTIONARIES")]
    pub dictionaries: bool,
    /// How often to build the rollups of newly closed hours (0s: never, e.g. when another
    /// replica builds them).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "FLOWLAKE_QUERY_ROLLUP_EVERY")]
    pub rollup_every: Duration,
    /// An hour is rolled up once it ended this long ago.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "FLOWLAKE_QUERY_ROLLUP_GRACE")]
    pub rollup_grace: Duration,
    /// PEM certificate chain: serve HTTPS (with `--tls-key`); re-read when it changes.
    #[arg(long, env = "FLOWLAKE_QUERY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "FLOWLAKE_QUERY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bearer tokens (JSON, SHA-256 hashes with names and scopes; see docs/security.md),
    /// re-read when the file changes. Without it authentication is off.
    #[arg(long, env = "FLOWLAKE_QUERY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// SQL in the audit log: `hash` (SHA-256), `text` or `none`.
    #[arg(long, default_value = "hash", env = "FLOWLAKE_QUERY_AUDIT_SQL")]
    pub audit_sql: AuditSql,
    /// On SIGTERM, how long running requests and exports may take to finish.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, env = "FLOWLAKE_QUERY_SHUTDOWN_GRACE")]
    pub shutdown_grace: Duration,
    /// Where `POST /api/v1/export` may write: absolute local directories or URL prefixes
    /// (`s3://bucket/exports/`). None: exports over HTTP are refused.
    #[arg(
        long = "export-root",
        env = "FLOWLAKE_QUERY_EXPORT_ROOTS",
        value_delimiter = ','
    )]
    pub export_roots: Vec<String>,
    /// Object-store options (credentials, endpoint) for export destinations, `KEY=VALUE`;
    /// requests cannot supply their own.
    #[arg(long = "export-storage-option", value_parser = parse_key_value, env = "FLOWLAKE_QUERY_EXPORT_STORAGE_OPTIONS", value_delimiter = ',')]
    pub export_storage_options: Vec<(String, String)>,
    /// How often a running export job rewrites its status record (below the first
    /// `--export-root`); a record silent for 3 intervals is reported as interrupted.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "FLOWLAKE_QUERY_EXPORT_JOB_HEARTBEAT")]
    pub export_job_heartbeat: Duration,
    /// Serve the capture API while authentication is off (captures hold packet
    /// payloads: without a token file they are refused unless this is set).
    #[arg(long, env = "FLOWLAKE_QUERY_CAPTURES_WITHOUT_AUTH")]
    pub captures_without_auth: bool,
    /// Captures (files, statuses, requests) are removed this many hours after they
    /// ended (0: never).
    #[arg(
        long,
        default_value_t = 168,
        env = "FLOWLAKE_QUERY_CAPTURE_RETENTION_HOURS"
    )]
    pub capture_retention_hours: u64,
}

/// Resolved settings of the query service.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub listen: SocketAddr,
    /// Arrow Flight SQL listener (`None`: off).
    pub flight_listen: Option<SocketAddr>,
    pub table: TableLocation,
    pub snapshot_max_age: Duration,
    pub limits: QueryLimits,
    pub target_partitions: usize,
    pub max_export_jobs: usize,
    /// Use rollups for the per-pod questions.
    pub rollups: bool,
    /// Names read as dictionaries ([`crate::dictionaries`]).
    pub dictionaries: bool,
    /// Build rollups this often (`None`: never in this process).
    pub rollup_every: Option<Duration>,
    pub rollup_policy: RollupPolicy,
    /// `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// `None`: authentication off.
    pub token_file: Option<PathBuf>,
    pub audit_sql: AuditSql,
    /// Where audit records go (default: one `tracing` line each).
    pub audit_sink: &'static dyn AuditSink,
    pub shutdown_grace: Duration,
    pub export: ExportPolicy,
    pub captures: CaptureSettings,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7080)),
            flight_listen: None,
            table: TableLocation {
                location: "./flowlake-table".into(),
                storage_options: HashMap::new(),
            },
            snapshot_max_age: Duration::from_secs(2),
            limits: QueryLimits::default(),
            target_partitions: cores(),
            max_export_jobs: 100,
            rollups: true,
            dictionaries: true,
            rollup_every: Some(Duration::from_secs(60)),
            rollup_policy: RollupPolicy::default(),
            tls: None,
            token_file: None,
            audit_sql: AuditSql::Hash,
            audit_sink: &TracingSink,
            shutdown_grace: Duration::from_secs(20),
            export: ExportPolicy::default(),
            captures: CaptureSettings::default(),
        }
    }
}

impl QueryConfig {
    /// Port 0 on loopback, a fresh snapshot for every query, small limits.
    pub fn for_tests(table: impl Into<String>) -> Self {
        QueryConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            flight_listen: None,
            table: TableLocation {
                location: table.into(),
                storage_options: HashMap::new(),
            },
            snapshot_max_age: Duration::ZERO,
            limits: QueryLimits {
                memory_bytes: 256 << 20,
                timeout: Duration::from_secs(30),
                max_rows: 100_000,
                max_concurrent: 4,
                metadata_cache_bytes: 64 << 20,
            },
            target_partitions: 2,
            max_export_jobs: 10,
            // Tests build rollups when they mean to.
            rollups: true,
            dictionaries: true,
            rollup_every: None,
            rollup_policy: RollupPolicy::default(),
            tls: None,
            token_file: None,
            audit_sql: AuditSql::Hash,
            audit_sink: &TracingSink,
            shutdown_grace: Duration::from_secs(5),
            export: ExportPolicy::default(),
            captures: CaptureSettings {
                retention_every: None,
                ..CaptureSettings::default()
            },
        }
    }
}

impl QueryConfig {
    /// What the engine needs of it.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            table: self.table.clone(),
            snapshot_max_age: self.snapshot_max_age,
            limits: self.limits,
            target_partitions: self.target_partitions,
            rollups: self.rollups,
            dictionaries: self.dictionaries,
        }
    }
}

impl QueryArgs {
    pub fn into_config(self) -> QueryConfig {
        QueryConfig {
            listen: self.listen,
            flight_listen: self.flight_listen,
            table: self.table.into_location(),
            snapshot_max_age: self.snapshot_max_age,
            limits: QueryLimits {
                memory_bytes: self.memory_limit,
                timeout: self.timeout,
                max_rows: self.max_rows,
                max_concurrent: self.max_concurrent_queries.max(1),
                metadata_cache_bytes: self.metadata_cache,
            },
            target_partitions: self.target_partitions.unwrap_or_else(cores).max(1),
            max_export_jobs: self.max_export_jobs.max(1),
            rollups: self.rollups,
            dictionaries: self.dictionaries,
            rollup_every: (self.rollups && !self.rollup_every.is_zero())
                .then_some(self.rollup_every),
            rollup_policy: RollupPolicy {
                grace: self.rollup_grace,
                ..RollupPolicy::default()
            },
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
            token_file: self.token_file,
            audit_sql: self.audit_sql,
            audit_sink: &TracingSink,
            shutdown_grace: self.shutdown_grace,
            export: ExportPolicy {
                roots: self.export_roots,
                storage_options: self.export_storage_options.into_iter().collect(),
                job_heartbeat: self.export_job_heartbeat,
            },
            captures: CaptureSettings {
                without_auth: self.captures_without_auth,
                retention: std::time::Duration::from_secs(self.capture_retention_hours * 3600),
                retention_every: (self.capture_retention_hours > 0)
                    .then_some(CaptureSettings::default().retention_every)
                    .flatten(),
            },
        }
    }
}

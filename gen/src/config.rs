//! Command-line flags of `flowlake gen` and the plain configuration behind them.

use std::path::PathBuf;

use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::error::{GenError, Result};
use crate::topology::TopologyConfig;

/// File format written by the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Apache Parquet (ZSTD), one file per hour partition and size limit.
    Parquet,
    /// Arrow IPC file format (`.arrow`).
    Arrow,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Arrow => "arrow",
        }
    }
}

/// `flowlake gen`: a deterministic synthetic workload of flow records.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Output directory; files go to `date=YYYY-MM-DD/hour=HH/` below it.
    #[arg(long, env = "FLOWLAKE_GEN_OUT")]
    pub out: PathBuf,
    #[arg(
        long,
        value_enum,
        default_value = "parquet",
        env = "FLOWLAKE_GEN_FORMAT"
    )]
    pub format: OutputFormat,
    /// Seed of every random choice: the same seed and flags give the same rows.
    #[arg(long, default_value_t = 1, env = "FLOWLAKE_GEN_SEED")]
    pub seed: u64,
    /// Name of the cluster in the `cluster` column.
    #[arg(long, default_value = "demo", env = "FLOWLAKE_GEN_CLUSTER")]
    pub cluster: String,
    #[arg(long, default_value_t = 10, env = "FLOWLAKE_GEN_NODES")]
    pub nodes: usize,
    #[arg(long, default_value_t = 6, env = "FLOWLAKE_GEN_NAMESPACES")]
    pub namespaces: usize,
    #[arg(
        long,
        default_value_t = 6,
        env = "FLOWLAKE_GEN_WORKLOADS_PER_NAMESPACE"
    )]
    pub workloads_per_namespace: usize,
    #[arg(long, default_value_t = 5, env = "FLOWLAKE_GEN_MAX_REPLICAS")]
    pub max_replicas: usize,
    /// First instant (RFC 3339). Default: the start of the current hour minus --duration.
    #[arg(long, env = "FLOWLAKE_GEN_START")]
    pub start: Option<DateTime<Utc>>,
    /// Length of simulated time.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "FLOWLAKE_GEN_DURATION")]
    pub duration: std::time::Duration,
    /// Reporting interval of each flow record.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "FLOWLAKE_GEN_INTERVAL")]
    pub interval: std::time::Duration,
    /// Flow records per second of simulated time.
    #[arg(long, default_value_t = 1000.0, env = "FLOWLAKE_GEN_RATE")]
    pub rate: f64,
    /// Total rows to write; overrides --rate.
    #[arg(long, env = "FLOWLAKE_GEN_ROWS")]
    pub rows: Option<u64>,
    /// Share of conversations that have dropped packets.
    #[arg(long, default_value_t = 0.005, env = "FLOWLAKE_GEN_DROP_SHARE")]
    pub drop_share: f64,
    /// Maximum rows per output file.
    #[arg(long, default_value_t = 1_000_000, env = "FLOWLAKE_GEN_ROWS_PER_FILE")]
    pub rows_per_file: usize,
    /// Worker threads (default: all cores).
    #[arg(long, env = "FLOWLAKE_GEN_THREADS")]
    pub threads: Option<usize>,
}

/// Resolved generator settings.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub out: PathBuf,
    pub format: OutputFormat,
    pub seed: u64,
    pub topology: TopologyConfig,
    pub start: DateTime<Utc>,
    pub duration: Duration,
    pub interval: Duration,
    pub rate: f64,
    pub drop_share: f64,
    pub rows_per_file: usize,
    pub batch_rows: usize,
    pub threads: usize,
}

impl GenConfig {
    /// A small fixed workload for tests: 2 hours from 2026-01-01T00:00Z.
    pub fn for_tests(out: PathBuf) -> Self {
        GenConfig {
            out,
            format: OutputFormat::Parquet,
            seed: 42,
            topology: TopologyConfig {
                cluster: "test".into(),
                nodes: 3,
                namespaces: 3,
                workloads_per_namespace: 4,
                max_replicas: 3,
            },
            start: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .expect("valid")
                .with_timezone(&Utc),
            duration: Duration::hours(2),
            interval: Duration::seconds(10),
            rate: 5.0,
            drop_share: 0.02,
            rows_per_file: 100_000,
            batch_rows: 8192,
            threads: 2,
        }
    }

    /// Total rows the run writes.
    pub fn total_rows(&self) -> u64 {
        (self.rate * self.duration.num_milliseconds() as f64 / 1000.0 + 1e-6).floor() as u64
    }

    fn validate(self) -> Result<Self> {
        let bad = |m: &str| Err(GenError::Config(m.into()));
        if self.duration <= Duration::zero() {
            return bad("--duration must be positive");
        }
        if self.interval <= Duration::zero() || self.interval > Duration::hours(1) {
            return bad("--interval must be between 1ms and 1h");
        }
        if Duration::hours(1).num_milliseconds() % self.interval.num_milliseconds() != 0 {
            return bad("--interval must divide an hour so intervals stay inside partitions");
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return bad("--rate must be a non-negative number");
        }
        if !(0.0..=1.0).contains(&self.drop_share) {
            return bad("--drop-share must be between 0 and 1");
        }
        if self.rows_per_file == 0 || self.topology.nodes == 0 {
            return bad("--rows-per-file and --nodes must be positive");
        }
        Ok(self)
    }
}

impl GenArgs {
    /// Resolves the flags; `now` decides the default start.
    pub fn into_config(self, now: DateTime<Utc>) -> Result<GenConfig> {
        let duration = Duration::from_std(self.duration)
            .map_err(|_| GenError::Config("--duration is too long".into()))?;
        let interval = Duration::from_std(self.interval)
            .map_err(|_| GenError::Config("--interval is too long".into()))?;
        let start = match self.start {
            Some(s) => s,
            None => now.duration_trunc(Duration::hours(1)).unwrap_or(now) - duration,
        };
        let rate = match self.rows {
            Some(rows) => rows as f64 / (duration.num_milliseconds() as f64 / 1000.0),
            None => self.rate,
        };
        GenConfig {
            out: self.out,
            format: self.format,
            seed: self.seed,
            topology: TopologyConfig {
                cluster: self.cluster,
                nodes: self.nodes,
                namespaces: self.namespaces,
                workloads_per_namespace: self.workloads_per_namespace,
                max_replicas: self.max_replicas,
            },
            start,
            duration,
            interval,
            rate,
            drop_share: self.drop_share,
            rows_per_file: self.rows_per_file,
            batch_rows: 65_536,
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
        .validate()
    }
}

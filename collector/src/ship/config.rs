//! Shipper settings: clap flags (`FLOWLAKE_COLLECTOR_*`) → [`ShipConfig`].

use std::path::PathBuf;
use std::time::Duration;

use super::batcher::FlushPolicy;

/// Resolved shipper settings.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// Base URL of the ingester (`http://host:port` or `https://…`).
    pub ingester_url: String,
    /// PEM CA certificate(s) the ingester's certificate must chain to (only these
    /// are trusted); `None`: the system's roots. Re-read when it changes.
    pub ingester_ca_file: Option<PathBuf>,
    /// File holding the collector's bearer token; `None`: no token. Re-read when it changes.
    pub ingester_token_file: Option<PathBuf>,
    /// The CA and token files are looked at (and re-read if changed) at most this often.
    pub credentials_recheck: Duration,
    /// Directory of the on-disk spool.
    pub spool_dir: PathBuf,
    /// Spool limit; beyond it the oldest batches are dropped (and counted).
    pub spool_max_bytes: u64,
    /// Encoded batches kept in memory before they spill to the spool.
    pub memory_max_bytes: u64,
    pub flush: FlushPolicy,
    /// Tries per batch before it is spooled.
    pub attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub request_timeout: Duration,
    /// On shutdown, how long to keep sending before the rest is spooled.
    pub drain_timeout: Duration,
    /// Record vectors queued between the producer and the batcher.
    pub channel_capacity: usize,
    /// A loss batch (rows of the `losses` table) is cut at most this often.
    pub loss_report_every: Duration,
}

impl Default for ShipConfig {
    fn default() -> Self {
        ShipConfig {
            ingester_url: "http://127.0.0.1:7070".into(),
            ingester_ca_file: None,
            ingester_token_file: None,
            credentials_recheck: Duration::from_secs(1),
            spool_dir: PathBuf::from("/var/lib/flowlake/spool"),
            spool_max_bytes: 1 << 30,
            memory_max_bytes: 64 << 20,
            flush: FlushPolicy {
                max_rows: 65_536,
                max_age: Duration::from_secs(1),
            },
            attempts: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            channel_capacity: 64,
            loss_report_every: Duration::from_secs(10),
        }
    }
}

impl ShipConfig {
    /// Small batches, quick retries, a spool in `spool_dir`.
    pub fn for_tests(ingester_url: String, spool_dir: PathBuf) -> Self {
        ShipConfig {
            ingester_url,
            ingester_ca_file: None,
            ingester_token_file: None,
            credentials_recheck: Duration::ZERO,
            spool_dir,
            spool_max_bytes: 64 << 20,
            memory_max_bytes: 1 << 20,
            flush: FlushPolicy {
                max_rows: 500,
                max_age: Duration::from_millis(100),
            },
            attempts: 2,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            channel_capacity: 16,
            loss_report_every: Duration::from_millis(200),
        }
    }
}

/// Shipping flags of `flowlake collector` / `standalone`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShipArgs {
    /// Ingester base URL.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_INGESTER_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub ingester_url: String,
    /// PEM CA certificate(s) that must have signed the ingester's certificate (an
    /// `https://` URL); only these are trusted. Re-read when the file changes.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_INGESTER_CA_FILE")]
    pub ingester_ca_file: Option<PathBuf>,
    /// File with the bearer token sent to the ingester (a token with the `ingest`
    /// scope); re-read when it changes.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_INGESTER_TOKEN_FILE")]
    pub ingester_token_file: Option<PathBuf>,
    /// Spool directory (batches wait here while the ingester is unreachable).
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_SPOOL_DIR",
        default_value = "/var/lib/flowlake/spool"
    )]
    pub spool_dir: PathBuf,
    /// Spool limit in bytes; beyond it the oldest batches are dropped and counted.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// Rows per Arrow batch.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_BATCH_ROWS", default_value_t = 65_536)]
    pub batch_rows: usize,
    /// Maximum time a record waits in a batch.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_BATCH_AGE", value_parser = humantime::parse_duration, default_value = "1s")]
    pub batch_age: Duration,
    /// Tries per batch before it is spooled.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_SHIP_ATTEMPTS", default_value_t = 3)]
    pub attempts: u32,
    /// Longest wait between retries.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_BACKOFF_MAX", value_parser = humantime::parse_duration, default_value = "30s")]
    pub backoff_max: Duration,
    /// How often this node's losses (map, ring buffer, channel, spool) are written
    /// as rows of the `losses` table, when there were any.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_LOSS_REPORT_EVERY", value_parser = humantime::parse_duration, default_value = "10s")]
    pub loss_report_every: Duration,
}

impl From<ShipArgs> for ShipConfig {
    fn from(a: ShipArgs) -> Self {
        ShipConfig {
            ingester_url: a.ingester_url,
            ingester_ca_file: a.ingester_ca_file,
            ingester_token_file: a.ingester_token_file,
            spool_dir: a.spool_dir,
            spool_max_bytes: a.spool_max_bytes,
            flush: FlushPolicy {
                max_rows: a.batch_rows,
                max_age: a.batch_age,
            },
            attempts: a.attempts,
            backoff_max: a.backoff_max,
            loss_report_every: a.loss_report_every,
            ..ShipConfig::default()
        }
    }
}

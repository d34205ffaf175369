//! Command-line flags of `flowlake ingester` / `flowlake compact` and the plain
//! configuration structs behind them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flowlake_service::tls::TlsFiles;

use crate::error::{IngestError, Result};

pub use flowlake_storage::TableArgs;

/// Table location and object-store options, resolved (the storage crate's
/// [`flowlake_storage::TableLocation`], shared with the query service).
pub type TableConfig = flowlake_storage::TableLocation;

/// `flowlake ingester`: receive Arrow batches over HTTP and store them as a Delta table.
#[derive(Debug, Clone, clap::Args)]
pub struct IngesterArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:7070", env = "FLOWLAKE_INGESTER_LISTEN")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub table: TableArgs,
    /// Directory of the write-ahead log (local disk).
    #[arg(
        long,
        default_value = "./flowlake-wal",
        env = "FLOWLAKE_INGESTER_WAL_DIR"
    )]
    pub wal_dir: PathBuf,
    /// Bearer tokens (JSON: SHA-256 hashes with names and scopes, docs/security.md),
    /// re-read when the file changes; `POST /api/v1/flows` needs `ingest`, `/metrics`
    /// `admin`. Without it authentication is off.
    #[arg(long, env = "FLOWLAKE_INGESTER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The former single shared token: refused, pointing at `--token-file`, so an
    /// upgrade does not silently leave the ingester open.
    #[arg(
        long,
        env = "FLOWLAKE_INGESTER_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM certificate chain: serve HTTPS (with `--tls-key`); re-read when it changes.
    #[arg(long, env = "FLOWLAKE_INGESTER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "FLOWLAKE_INGESTER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Flush when this many rows are buffered.
    #[arg(
        long,
        default_value_t = 1_000_000,
        env = "FLOWLAKE_INGESTER_FLUSH_ROWS"
    )]
    pub flush_rows: usize,
    /// Flush when this many bytes (in memory) are buffered.
    #[arg(long, default_value_t = 256 << 20, env = "FLOWLAKE_INGESTER_FLUSH_BYTES")]
    pub flush_bytes: usize,
    /// Flush when the oldest buffered row is this old.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, env = "FLOWLAKE_INGESTER_FLUSH_AGE")]
    pub flush_age: Duration,
    /// Hard limit of bytes held in memory (buffered or being flushed): above it
    /// requests get 503 with Retry-After.
    #[arg(long, default_value_t = 1 << 30, env = "FLOWLAKE_INGESTER_MAX_BUFFER_BYTES")]
    pub max_buffer_bytes: usize,
    /// Largest request body accepted (after Content-Encoding is removed).
    #[arg(long, default_value_t = 64 << 20, env = "FLOWLAKE_INGESTER_MAX_BODY_BYTES")]
    pub max_body_bytes: usize,
    /// How long a client batch id is remembered for deduplication.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "FLOWLAKE_INGESTER_DEDUP_WINDOW")]
    pub dedup_window: Duration,
    /// Size at which a WAL segment is closed and a new one started.
    #[arg(long, default_value_t = 64 << 20, env = "FLOWLAKE_INGESTER_WAL_SEGMENT_BYTES")]
    pub wal_segment_bytes: u64,
    /// At shutdown (SIGTERM), the time to finish requests and commit the buffer;
    /// what is not committed by then stays in the WAL for the next start.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration, env = "FLOWLAKE_INGESTER_SHUTDOWN_GRACE")]
    pub shutdown_grace: Duration,
    /// A connection that does not send a whole request head within this time is
    /// closed (slow or idle clients).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "FLOWLAKE_INGESTER_HEADER_TIMEOUT")]
    pub header_timeout: Duration,
    /// A request body that does not arrive whole within this time is refused
    /// (408) and its memory released.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "FLOWLAKE_INGESTER_BODY_TIMEOUT")]
    pub body_timeout: Duration,
    /// Run compaction and retention in the ingester at this interval (off when unset).
    #[arg(long, value_parser = humantime::parse_duration, env = "FLOWLAKE_INGESTER_COMPACT_EVERY")]
    pub compact_every: Option<Duration>,
    #[command(flatten)]
    pub compact: CompactArgs,
}

/// Compaction and retention settings (`flowlake compact` and the ingester's schedule).
#[derive(Debug, Clone, clap::Args)]
pub struct CompactArgs {
    /// Target size of compacted files.
    #[arg(long, default_value_t = 256 << 20, env = "FLOWLAKE_COMPACT_TARGET_BYTES")]
    pub target_file_bytes: u64,
    /// Partitions whose hour ended at least this long ago are closed and compacted.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, env = "FLOWLAKE_COMPACT_GRACE")]
    pub grace: Duration,
    /// Drop partitions older than this many days (keep everything when unset).
    #[arg(long, env = "FLOWLAKE_COMPACT_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Drop hour partitions that ended more than this many hours ago (added to
    /// `--retention-days`; keep everything when both are unset).
    #[arg(long, env = "FLOWLAKE_COMPACT_RETENTION_HOURS")]
    pub retention_hours: Option<u32>,
    /// Removed files are deleted by vacuum once they are this old.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "FLOWLAKE_COMPACT_VACUUM_AFTER")]
    pub vacuum_after: Duration,
    /// Application transactions (`txn`: a collector's batch slots, a compacted
    /// partition) not updated for this long expire: readers ignore them and
    /// checkpoints drop them. Set on the table (`delta.setTransactionRetentionDuration`)
    /// by every compaction pass, also on tables created without it.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration, env = "FLOWLAKE_COMPACT_TXN_RETENTION")]
    pub txn_retention: Duration,
}

/// `flowlake compact`: one compaction + retention pass over a table.
#[derive(Debug, Clone, clap::Args)]
pub struct CompactCommandArgs {
    #[command(flatten)]
    pub table: TableArgs,
    #[command(flatten)]
    pub compact: CompactArgs,
}

/// When the buffer is written to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            max_rows: 1_000_000,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(15),
        }
    }
}

/// Compaction and retention, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactConfig {
    pub target_file_bytes: u64,
    pub grace: Duration,
    pub retention_days: Option<u32>,
    pub retention_hours: Option<u32>,
    pub vacuum_after: Duration,
    pub txn_retention: Duration,
}

impl CompactConfig {
    /// How long partitions are kept after their hour ended, if not forever.
    pub fn retention(&self) -> Option<chrono::Duration> {
        if self.retention_days.is_none() && self.retention_hours.is_none() {
            return None;
        }
        let days = i64::from(self.retention_days.unwrap_or(0));
        let hours = i64::from(self.retention_hours.unwrap_or(0));
        Some(chrono::Duration::hours(24 * days + hours))
    }
}

impl Default for CompactConfig {
    fn default() -> Self {
        CompactConfig {
            target_file_bytes: 256 << 20,
            grace: Duration::from_secs(600),
            retention_days: None,
            retention_hours: None,
            vacuum_after: Duration::from_secs(3600),
            txn_retention: Duration::from_secs(7 * 86400),
        }
    }
}

impl CompactArgs {
    pub fn into_config(self) -> CompactConfig {
        CompactConfig {
            target_file_bytes: self.target_file_bytes,
            grace: self.grace,
            retention_days: self.retention_days,
            retention_hours: self.retention_hours,
            vacuum_after: self.vacuum_after,
            txn_retention: self.txn_retention,
        }
    }
}

/// Everything the ingester needs, independent of how it was configured.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    pub listen: SocketAddr,
    pub table: TableConfig,
    pub wal_dir: PathBuf,
    /// Token file (see [`flowlake_service::TokenStore`]); `None`: no authentication.
    pub token_file: Option<PathBuf>,
    /// Certificate and key of the HTTPS listener; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The token and TLS files are looked at (and re-read if changed) at most this often.
    pub reload_every: Duration,
    pub flush: FlushPolicy,
    pub max_buffer_bytes: usize,
    pub max_body_bytes: usize,
    pub dedup_window: Duration,
    pub wal_segment_bytes: u64,
    pub compact_every: Option<Duration>,
    pub compact: CompactConfig,
    pub shutdown_grace: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        IngesterConfig {
            listen: ([0, 0, 0, 0], 7070).into(),
            table: TableConfig {
                location: "./flowlake-table".into(),
                storage_options: HashMap::new(),
            },
            wal_dir: "./flowlake-wal".into(),
            token_file: None,
            tls: None,
            reload_every: Duration::from_secs(1),
            flush: FlushPolicy::default(),
            max_buffer_bytes: 1 << 30,
            max_body_bytes: 64 << 20,
            dedup_window: Duration::from_secs(3600),
            wal_segment_bytes: 64 << 20,
            compact_every: None,
            compact: CompactConfig::default(),
            shutdown_grace: Duration::from_secs(25),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

impl IngesterConfig {
    /// Loopback on an ephemeral port, table and WAL below `dir`, quick flushes.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        IngesterConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            table: TableConfig {
                location: dir.join("table").display().to_string(),
                storage_options: HashMap::new(),
            },
            wal_dir: dir.join("wal"),
            flush: FlushPolicy {
                max_rows: 100_000,
                max_bytes: 64 << 20,
                max_age: Duration::from_millis(300),
            },
            max_buffer_bytes: 256 << 20,
            max_body_bytes: 16 << 20,
            wal_segment_bytes: 1 << 20,
            shutdown_grace: Duration::from_secs(5),
            ..IngesterConfig::default()
        }
    }

    /// Refuses settings that cannot work together. The memory budget holds the
    /// buffer, a flush's drained rows and their sorted copy, and bodies being
    /// read: a buffer flushed by bytes must fit twice with a largest body beside
    /// it, or it would stall ingestion before it is ever flushed.
    pub fn validate(&self) -> Result<()> {
        let f = &self.flush;
        let positive = [
            (f.max_rows == 0, "--flush-rows"),
            (f.max_bytes == 0, "--flush-bytes"),
            (f.max_age.is_zero(), "--flush-age"),
            (self.max_body_bytes == 0, "--max-body-bytes"),
            (self.wal_segment_bytes == 0, "--wal-segment-bytes"),
            (self.header_timeout.is_zero(), "--header-timeout"),
            (self.body_timeout.is_zero(), "--body-timeout"),
        ];
        if let Some((_, flag)) = positive.iter().find(|(zero, _)| *zero) {
            return Err(IngestError::Config(format!("{flag} must be positive")));
        }
        let needed = f
            .max_bytes
            .saturating_mul(2)
            .saturating_add(self.max_body_bytes);
        if needed > self.max_buffer_bytes {
            return Err(IngestError::Config(format!(
                "--max-buffer-bytes {} is below 2 x --flush-bytes {} + --max-body-bytes {} = {needed}: \
                 the buffer would fill before a flush by bytes could run",
                self.max_buffer_bytes, f.max_bytes, self.max_body_bytes
            )));
        }
        Ok(())
    }
}

impl IngesterArgs {
    pub fn into_config(self) -> Result<IngesterConfig> {
        if self.token.is_some() {
            return Err(IngestError::Config(
                "--token (FLOWLAKE_INGESTER_TOKEN) is replaced by --token-file \
                 (FLOWLAKE_INGESTER_TOKEN_FILE): a JSON file of hashed tokens with scopes, see \
                 docs/security.md"
                    .into(),
            ));
        }
        let config = IngesterConfig {
            listen: self.listen,
            table: self.table.into_location(),
            wal_dir: self.wal_dir,
            token_file: self.token_file,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
            reload_every: Duration::from_secs(1),
            flush: FlushPolicy {
                max_rows: self.flush_rows,
                max_bytes: self.flush_bytes,
                max_age: self.flush_age,
            },
            max_buffer_bytes: self.max_buffer_bytes,
            max_body_bytes: self.max_body_bytes,
            dedup_window: self.dedup_window,
            wal_segment_bytes: self.wal_segment_bytes,
            compact_every: self.compact_every,
            compact: self.compact.into_config(),
            shutdown_grace: self.shutdown_grace,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: IngesterArgs,
    }

    fn parse(args: &[&str]) -> IngesterArgs {
        Cli::try_parse_from(std::iter::once("ingester").chain(args.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn token_and_tls_files_and_the_old_token_flag_refused() {
        let config = parse(&[
            "--token-file",
            "/etc/flowlake/tokens.json",
            "--tls-cert",
            "/tls/tls.crt",
            "--tls-key",
            "/tls/tls.key",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            config.token_file.as_deref(),
            Some(std::path::Path::new("/etc/flowlake/tokens.json"))
        );
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert: "/tls/tls.crt".into(),
                key: "/tls/tls.key".into()
            })
        );
        let err = parse(&["--token", "s3cret"]).into_config().unwrap_err();
        assert!(err.to_string().contains("--token-file"), "{err}");
        // A certificate without its key is a usage error.
        assert!(Cli::try_parse_from(["ingester", "--tls-cert", "/tls/tls.crt"]).is_err());
    }
}

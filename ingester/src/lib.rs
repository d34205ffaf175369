//! Flowlake ingester: Arrow IPC batches over HTTP become a Delta Lake table of
//! partitioned Parquet on object storage. Nothing acknowledged is ever lost.
//!
//! Write path, in order: [`serve`] (connections, timeouts) → [`http`] (axum
//! routes, memory admission, auth) → [`decode`] (IPC, schema) → [`validate`]
//! (values) → [`writer`] (one thread: dedup, [`wal`] group commit, buffer) →
//! [`flush`] (policy, [`sort`] order, [`parquet`] writer properties) → [`table`] (Delta
//! commits on any object_store URL) → [`compact`] (merge, retention, vacuum,
//! checkpoints). [`quarantine`] holds what can never be written; [`losses`] is
//! the `losses` table of what collectors lost and what was refused; [`metrics`] and
//! [`error`] beside them.

pub mod buffer;
pub mod capture;
pub mod compact;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod error;
pub mod exactly_once;
pub mod flush;
pub mod frame;
mod gather;
pub mod http;
mod intern;
pub mod losses;
pub mod metrics;
pub mod parquet;
pub mod quarantine;
pub mod run;
pub mod serve;
pub mod sort;
pub mod table;
pub mod validate;
pub mod wal;
pub mod writer;

#[cfg(test)]
mod testdata;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use buffer::FlushReason;
pub use compact::{CompactSummary, compact_once};
pub use config::{
    CompactArgs, CompactCommandArgs, CompactConfig, FlushPolicy, IngesterArgs, IngesterConfig,
    TableArgs, TableConfig,
};
pub use decode::{BodyEncoding, decode_body, decode_bytes, encode_ipc};
pub use error::{IngestError, Result};
pub use flowlake_storage::cloud_env_options;
pub use http::{BATCH_ID_HEADER, IngestResponse, routes};
pub use table::{Table, TableFile};
pub use wal::{BatchId, SegmentId, WalSeq};
pub use writer::Clock;

use crate::buffer::{Buffer, MemoryBudget, SharedStats};
use crate::dedup::DedupWindow;
use crate::flush::{Flusher, WriterId};
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::validate::check_rows;
use crate::wal::Wal;
use crate::writer::{WalHealth, WriterHandle};

/// Entry point for starting an ingester.
pub struct Ingester;

/// A started ingester: its address, and a clean shutdown.
pub struct RunningIngester {
    addr: SocketAddr,
    stop_http: CancellationToken,
    stop_flush: CancellationToken,
    http: tokio::task::JoinHandle<()>,
    tasks: TaskTracker,
    flusher: tokio::task::JoinHandle<Result<()>>,
    writer: WriterHandle,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    shutdown_grace: Duration,
    /// When shutdown began plus the grace: the HTTP drain and the final flush
    /// both end by then.
    deadline: Arc<OnceLock<Instant>>,
}

impl Ingester {
    /// Binds, replays the WAL, and serves; the returned handle reports the bound
    /// address (use port 0 in tests).
    pub async fn start(config: IngesterConfig) -> Result<RunningIngester> {
        Self::start_with(config, Registry::default(), Arc::new(chrono::Utc::now)).await
    }

    /// [`Ingester::start`] with the caller's metrics registry and clock.
    pub async fn start_with(
        config: IngesterConfig,
        mut registry: Registry,
        clock: Clock,
    ) -> Result<RunningIngester> {
        config.validate()?;
        let metrics = Metrics::new(&mut registry);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| IngestError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| IngestError::Bind {
            addr: config.listen,
            source,
        })?;
        let budget = Arc::new(MemoryBudget::new(config.max_buffer_bytes));
        let state = Arc::new(http::HttpState {
            writer: OnceLock::new(),
            budget: Arc::clone(&budget),
            metrics: metrics.clone(),
            registry,
            auth: http::auth(&config)?,
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.body_timeout,
            clock: Arc::clone(&clock),
            captures: table::capture_store(&config.table)?,
            losses: OnceLock::new(),
        });
        let stop_http = CancellationToken::new();
        let stop_flush = CancellationToken::new();
        let deadline: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let app = http::router(Arc::clone(&state));
        let limits = serve::ServeLimits {
            header_timeout: config.header_timeout,
        };
        let (grace, http_deadline) = (config.shutdown_grace, Arc::clone(&deadline));
        let http = tokio::spawn(serve::serve(
            listener,
            serve::tls_acceptor(&config)?,
            app,
            limits,
            stop_http.clone(),
            // Requests in progress get half of what is left of the grace; the
            // final flush the rest.
            move || {
                let end = *http_deadline.get_or_init(|| Instant::now() + grace);
                end.saturating_duration_since(Instant::now()) / 2
            },
        ));
        tracing::info!(%addr, table = %config.table.location, "ingester listening; replaying WAL");

        let losses =
            losses::LossTable::open_or_create(&config.table, metrics.clone(), Arc::clone(&clock));
        let opened = match losses.await {
            Ok(losses) => {
                let _ = state.losses.set(Arc::new(losses));
                let losses = state.losses.get().cloned();
                Self::recover(&config, &metrics, &budget, Arc::clone(&clock), losses).await
            }
            Err(e) => Err(e),
        };
        if opened.is_err() {
            // Nothing to drain: the server has not served a write.
            let _ = deadline.set(Instant::now());
        }
        let (writer, writer_thread, table, writer_id, stats, flush_now) = match opened {
            Ok(parts) => parts,
            Err(e) => {
                stop_http.cancel();
                let _ = http.await;
                return Err(e);
            }
        };
        let _ = state.writer.set(writer.clone());
        tracing::info!(%addr, "ingester ready");

        let tasks = TaskTracker::new();
        let flusher = Flusher {
            writer: writer.clone(),
            table: table.clone(),
            writer_id,
            wal_dir: config.wal_dir.clone(),
            stats,
            policy: config.flush,
            flush_now,
            budget,
            metrics: metrics.clone(),
            quarantine: Quarantine::new(
                &config.wal_dir,
                metrics.clone(),
                state.losses.get().cloned(),
            ),
            give_up_at: Arc::clone(&deadline),
            shutdown_grace: config.shutdown_grace,
            txns: Default::default(),
        };
        let flusher = tasks.spawn(flusher.run(stop_flush.clone()));
        if let Some(every) = config.compact_every {
            tasks.spawn(compact::run_scheduled(
                table,
                config.compact.clone(),
                every,
                metrics,
                clock,
                stop_flush.clone(),
            ));
        }
        tasks.close();
        Ok(RunningIngester {
            addr,
            stop_http,
            stop_flush,
            http,
            tasks,
            flusher,
            writer,
            writer_thread: Some(writer_thread),
            shutdown_grace: config.shutdown_grace,
            deadline,
        })
    }

    /// Opens the table, replays the WAL past what the table already holds, and
    /// starts the writer thread.
    #[allow(clippy::type_complexity)]
    async fn recover(
        config: &IngesterConfig,
        metrics: &Metrics,
        budget: &MemoryBudget,
        clock: Clock,
        losses: Option<Arc<losses::LossTable>>,
    ) -> Result<(
        writer::WriterHandle,
        std::thread::JoinHandle<()>,
        Table,
        WriterId,
        Arc<SharedStats>,
        Arc<Notify>,
    )> {
        let table = Table::open_or_create(&config.table).await?;
        let writer_id = WriterId::load_or_create(&config.wal_dir)?;
        let committed = table
            .app_version(writer_id.as_str())
            .await?
            .unwrap_or(0)
            .max(0) as u64;
        let (mut wal, replay) = Wal::open(&config.wal_dir, config.wal_segment_bytes)?;
        metrics
            .wal_torn_segments
            .inc_by(replay.torn_segments as u64);
        metrics.wal_bytes.set(replay.bytes as i64);
        let mut dedup = DedupWindow::open(&config.wal_dir, config.dedup_window, clock())?;
        let quarantine = Quarantine::new(&config.wal_dir, metrics.clone(), losses);
        let mut buffer = Buffer::default();
        let mut last = committed;
        let mut replayed = 0;
        let now = std::time::Instant::now();
        let today = clock();
        for record in replay.records {
            last = last.max(record.seq.0);
            let id = record.batch_id.as_ref();
            if record.seq.0 <= committed {
                // In the table; its id may be missing from the journal after a
                // crash between the WAL's sync and the journal's.
                if let Some(id) = id.filter(|id| dedup.get(id).is_none()) {
                    let rows = decode_bytes(record.body.clone(), record.encoding, usize::MAX)
                        .map_or(0, |d| d.rows);
                    dedup.remember(id, rows as u64, today);
                }
                continue;
            }
            // Checked as a request is: a record an older build acknowledged
            // unchecked must not stall every flush after it.
            let checked = decode_bytes(record.body.clone(), record.encoding, usize::MAX)
                .map_err(IngestError::from)
                .and_then(|d| check_rows(&d.batches, today).map(|()| d));
            match checked {
                Ok(d) => {
                    replayed += d.rows;
                    if let Some(id) = id {
                        dedup.remember(id, d.rows as u64, today);
                    }
                    let bytes = d.memory_bytes.max(record.body.len());
                    budget.force_reserve(bytes);
                    buffer.push(
                        buffer::BufferedRecord {
                            seq: record.seq,
                            batch_id: record.batch_id.clone(),
                            batches: d.batches,
                            rows: d.rows,
                            bytes,
                        },
                        now,
                    );
                }
                Err(e) => {
                    metrics.error("replay");
                    if let Some(id) = id {
                        dedup.remember(id, 0, today);
                    }
                    quarantine
                        .body(record.seq, id, record.encoding, &record.body, &e)
                        .await?;
                }
            }
        }
        // Ids recovered from the WAL are durable before any segment can go.
        dedup.sync(today)?;
        let removed = wal.remove_covered(WalSeq(committed))?;
        metrics.wal_replayed_rows.inc_by(replayed as u64);
        tracing::info!(
            committed_seq = committed,
            replayed_rows = replayed,
            torn_segments = replay.torn_segments,
            removed_segments = removed,
            "WAL replayed"
        );
        let stats = Arc::new(SharedStats::default());
        stats.set(buffer.stats());
        let flush_now = Arc::new(Notify::new());
        let (handle, thread) = writer::spawn(writer::WriterState {
            wal,
            dedup,
            buffer,
            next_seq: WalSeq(last + 1),
            stats: Arc::clone(&stats),
            policy: config.flush,
            flush_now: Arc::clone(&flush_now),
            metrics: metrics.clone(),
            clock,
            health: Arc::new(WalHealth::default()),
        })?;
        Ok((handle, thread, table, writer_id, stats, flush_now))
    }
}

impl RunningIngester {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes requests in progress, commits the buffer to the
    /// table, and stops, all within the shutdown grace. Fails with
    /// [`IngestError::Uncommitted`] when the table could not take everything
    /// acknowledged in time: the WAL keeps it for the next start.
    pub async fn shutdown(mut self) -> Result<()> {
        let grace = self.shutdown_grace;
        let _ = self.deadline.get_or_init(|| Instant::now() + grace);
        self.stop_http.cancel();
        let _ = (&mut self.http).await;
        self.stop_flush.cancel();
        self.tasks.wait().await;
        let flushed = (&mut self.flusher)
            .await
            .map_err(|e| IngestError::Internal(format!("flush task: {e}")))?;
        self.writer.stop().await;
        if let Some(t) = self.writer_thread.take() {
            tokio::task::spawn_blocking(move || t.join())
                .await
                .map_err(|e| IngestError::Internal(format!("joining WAL thread: {e}")))?
                .map_err(|_| IngestError::Internal("WAL thread panicked".into()))?;
        }
        flushed?;
        tracing::info!("ingester stopped; everything acknowledged is in the table");
        Ok(())
    }
}

/// Runs an ingester until `shutdown` is cancelled, then stops cleanly.
pub async fn run(config: IngesterConfig, shutdown: CancellationToken) -> Result<()> {
    let running = Ingester::start(config).await?;
    shutdown.cancelled().await;
    running.shutdown().await
}

/// One `flowlake compact` pass on a new runtime, for the synchronous binary.
pub fn compact_blocking(table: TableConfig, cfg: CompactConfig) -> Result<CompactSummary> {
    runtime()?.block_on(async {
        let mut t = Table::open(&table).await?;
        compact_once(&mut t, &cfg, chrono::Utc::now()).await
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| IngestError::Internal(format!("tokio runtime: {e}")))
}

/// [`run`] on a new multi-threaded runtime, stopping on Ctrl-C or SIGTERM: for the
/// synchronous `flowlake` binary.
pub fn run_blocking(config: IngesterConfig) -> Result<()> {
    let rt = runtime()?;
    let result = rt.block_on(async { run(config, flowlake_service::shutdown_signal()).await });
    // An upload that hangs on an unreachable store must not hold the exit: the
    // WAL has its rows.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

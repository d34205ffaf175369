//! Batching and shipping: records → enriched → Arrow batches (flushed by size and
//! age) → zstd Arrow IPC with a batch id → `POST /api/v1/flows` on the ingester.
//!
//! Two tasks: the batcher builds and encodes batches into the [`Outbox`]; the sender
//! takes them oldest first. A batch that cannot be delivered (unreachable, 503, 5xx
//! after a few quick retries) goes to the on-disk [`spool::Spool`], and while the spool
//! holds anything new batches join it there, so everything is sent in order when the
//! ingester returns. Batches the ingester rejects as bad input (4xx) are not retried:
//! they are dropped with an error log and counted (`rejected`).
//!
//! Beside the flow batches, the batcher cuts a loss batch every report interval in
//! which something was lost ([`losses`]): the `losses` table's rows of this node,
//! sent to `POST /api/v1/losses` in the same order, through the same spool.

pub mod batcher;
pub mod client;
pub mod config;
pub mod encode;
pub mod error;
pub mod losses;
pub mod metrics;
pub mod producer;
pub mod spool;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use flowlake_schemas::FlowRecord;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::enrich::{Clock, Enricher};

pub use batcher::{Batcher, FlushPolicy, FlushReason};
pub use client::{Backoff, IngestClient, Outcome};
pub use config::{ShipArgs, ShipConfig};
pub use encode::{
    BATCH_ID_HEADER, BatchId, BatchKind, BatchSeq, EncodedBatch, decode_ipc, encode_ipc, plain_ipc,
};
pub use error::{Result, ShipError};
pub use losses::{LossReport, LossReporter};
pub use metrics::{DropReason, ShipMetrics};
pub use spool::Spool;

/// Where the sender took a batch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Memory,
    Spool,
}

/// Batches waiting to be sent: newest in memory, oldest in the spool. Invariant:
/// while the spool holds anything, memory is empty, so the oldest batch is always
/// the spool's first or memory's first.
struct Outbox {
    memory: VecDeque<EncodedBatch>,
    memory_bytes: u64,
    memory_max: u64,
    spool: Spool,
    producer: producer::Producer,
    metrics: metrics::ShipMetrics,
}

impl Outbox {
    fn push(&mut self, b: EncodedBatch) {
        if !self.spool.is_empty() {
            self.spool_one(&b);
            return;
        }
        self.memory_bytes += b.ipc.len() as u64;
        self.memory.push_back(b);
        if self.memory_bytes > self.memory_max {
            self.spill();
        }
    }

    fn spool_one(&mut self, b: &EncodedBatch) {
        if let Err(e) = self.spool.write(b) {
            tracing::error!(error = %e, batch = %b.id, records = b.records, "cannot spool batch: dropped");
            self.metrics.dropped(DropReason::SpoolError, b.records);
        }
    }

    /// Everything in memory goes to the spool.
    fn spill(&mut self) {
        while let Some(b) = self.memory.pop_front() {
            self.spool_one(&b);
        }
        self.memory_bytes = 0;
    }

    fn next(&mut self) -> Option<(EncodedBatch, Source)> {
        if let Some(b) = self.spool.take_oldest() {
            return Some((b, Source::Spool));
        }
        let b = self.memory.pop_front()?;
        self.memory_bytes -= b.ipc.len() as u64;
        Some((b, Source::Memory))
    }

    fn done(&mut self, b: &EncodedBatch, from: Source) {
        if from == Source::Spool {
            self.spool.remove(b.seq);
        }
    }

    /// Not delivered: the batch (the oldest of all) and everything after it wait on disk.
    fn failed(&mut self, b: &EncodedBatch, from: Source) {
        match from {
            Source::Spool => self.spool.release(),
            Source::Memory => self.spool_one(b),
        }
        self.spill();
    }

    fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.is_empty()
    }
}

/// The running shipper. Feed it with [`Shipper::send`] or a [`Shipper::sender`]
/// clone; stop it with [`Shipper::shutdown`].
pub struct Shipper {
    tx: mpsc::Sender<Vec<FlowRecord>>,
    outbox: Arc<Mutex<Outbox>>,
    notify: Arc<Notify>,
    stop_batcher: CancellationToken,
    stop_sender: CancellationToken,
    batcher: JoinHandle<Option<LossReporter>>,
    sender: JoinHandle<()>,
    drain_timeout: std::time::Duration,
    clock: Clock,
}

impl Shipper {
    /// Opens the spool (replaying what a previous run left) and starts the tasks.
    pub fn start(
        cfg: &ShipConfig,
        enricher: Enricher,
        metrics: ShipMetrics,
        clock: Clock,
    ) -> Result<Self> {
        Self::start_with_losses(cfg, enricher, metrics, clock, None)
    }

    /// [`Shipper::start`], and the node's losses shipped as rows of the `losses`
    /// table every `losses.every` in which something was lost.
    pub fn start_with_losses(
        cfg: &ShipConfig,
        enricher: Enricher,
        metrics: ShipMetrics,
        clock: Clock,
        losses: Option<LossReport>,
    ) -> Result<Self> {
        let client = IngestClient::new(cfg)?;
        let spool = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes, metrics.clone())?;
        let outbox = Arc::new(Mutex::new(Outbox {
            memory: VecDeque::new(),
            memory_bytes: 0,
            memory_max: cfg.memory_max_bytes,
            producer: producer::Producer::open(&cfg.spool_dir, spool.next_seq())?,
            spool,
            metrics: metrics.clone(),
        }));
        let notify = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
        let stop_batcher = CancellationToken::new();
        let stop_sender = CancellationToken::new();
        let batcher = tokio::spawn(run_batcher(BatcherTask {
            rx,
            batcher: Batcher::new(cfg.flush),
            enricher,
            outbox: Arc::clone(&outbox),
            notify: Arc::clone(&notify),
            metrics: metrics.clone(),
            losses: losses.map(|l| LossReporter::new(l, clock())),
            clock: Arc::clone(&clock),
            tick: (cfg.flush.max_age / 4).clamp(
                std::time::Duration::from_millis(5),
                std::time::Duration::from_secs(1),
            ),
            stop: stop_batcher.clone(),
        }));
        let sender = tokio::spawn(run_sender(SenderTask {
            client,
            outbox: Arc::clone(&outbox),
            notify: Arc::clone(&notify),
            metrics,
            attempts: cfg.attempts,
            backoff: Backoff::new(cfg.backoff_base, cfg.backoff_max),
            stop: stop_sender.clone(),
        }));
        Ok(Shipper {
            tx,
            outbox,
            notify,
            stop_batcher,
            stop_sender,
            batcher,
            sender,
            drain_timeout: cfg.drain_timeout,
            clock,
        })
    }

    /// Queues records (waits when the batcher is behind).
    pub async fn send(&self, records: Vec<FlowRecord>) -> Result<()> {
        self.tx.send(records).await.map_err(|_| ShipError::Closed)
    }

    /// A channel into the shipper, for producers that own their loop.
    pub fn sender(&self) -> mpsc::Sender<Vec<FlowRecord>> {
        self.tx.clone()
    }

    /// Batches waiting (in memory or spooled).
    pub fn pending(&self) -> usize {
        let o = self.outbox.lock().expect("outbox lock");
        o.memory.len() + o.spool.len()
    }

    /// Graceful stop: the last partial batch is cut, sending continues for up to the
    /// drain timeout, and whatever is left is spooled for the next start.
    pub async fn shutdown(self) {
        drop(self.tx);
        self.stop_batcher.cancel();
        let reporter = self.batcher.await.ok().flatten();
        let drained = async {
            while !self.outbox.lock().expect("outbox lock").is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(self.drain_timeout, drained).await;
        self.stop_sender.cancel();
        self.notify.notify_one();
        let _ = self.sender.await;
        let mut o = self.outbox.lock().expect("outbox lock");
        o.spill();
        // What the final spill deleted for room (and anything else lost since
        // the batcher's last report) goes into the spool as a last loss batch,
        // sent at the next start: the spool never deletes loss batches.
        if let Some(mut reporter) = reporter
            && let Some(b) = loss_batch(&mut reporter, &mut o, (self.clock)())
        {
            o.spool_one(&b);
        }
        tracing::info!(spooled_batches = o.spool.len(), "shipper stopped");
    }
}

/// The loss batch of what `reporter` counted since its last report, numbered
/// in `o`'s sequence; `None` when nothing was lost (or it cannot be built:
/// logged, its rows lost).
fn loss_batch(
    reporter: &mut LossReporter,
    o: &mut Outbox,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<EncodedBatch> {
    let rows = reporter.take(now);
    if rows.is_empty() {
        return None;
    }
    let encoded = flowlake_schemas::losses_to_batch(&rows)
        .map_err(|e| ShipError::Encode(arrow::error::ArrowError::ExternalError(Box::new(e))))
        .and_then(|rb| encode::write_ipc(&rb));
    match encoded.and_then(|ipc| Ok((ipc, o.producer.next_batch()?))) {
        Ok((ipc, (id, seq))) => Some(EncodedBatch {
            kind: BatchKind::Losses,
            seq,
            id,
            records: rows.len() as u64,
            created: now,
            ipc,
        }),
        Err(e) => {
            tracing::error!(error = %e, rows = rows.len(), "cannot build the loss batch: its rows are lost");
            None
        }
    }
}

struct BatcherTask {
    rx: mpsc::Receiver<Vec<FlowRecord>>,
    batcher: Batcher,
    enricher: Enricher,
    outbox: Arc<Mutex<Outbox>>,
    notify: Arc<Notify>,
    metrics: ShipMetrics,
    losses: Option<LossReporter>,
    clock: Clock,
    tick: std::time::Duration,
    stop: CancellationToken,
}

impl BatcherTask {
    /// The loss batch of the interval ending now, when one is due (or `last`)
    /// and something was lost.
    fn report_losses(&mut self, last: bool) {
        let now = (self.clock)();
        let Some(reporter) = self.losses.as_mut().filter(|r| last || r.due(now)) else {
            return;
        };
        let mut o = self.outbox.lock().expect("outbox lock");
        if let Some(b) = loss_batch(reporter, &mut o, now) {
            o.push(b);
        }
        drop(o);
        self.notify.notify_one();
    }

    fn emit(&self, cut: Vec<(arrow::record_batch::RecordBatch, FlushReason)>) {
        for (rb, reason) in cut {
            self.metrics
                .batches_flushed
                .get_or_create(&metrics::Reason {
                    reason: reason.as_str(),
                })
                .inc();
            let records = rb.num_rows() as u64;
            match encode_ipc(&rb) {
                Ok(ipc) => {
                    let mut o = self.outbox.lock().expect("outbox lock");
                    let (id, seq) = match o.producer.next_batch() {
                        Ok(next) => next,
                        Err(e) => {
                            tracing::error!(error = %e, records, "cannot number the batch: dropped");
                            self.metrics.dropped(DropReason::SpoolError, records);
                            continue;
                        }
                    };
                    let b = EncodedBatch {
                        kind: BatchKind::Flows,
                        seq,
                        id,
                        records,
                        created: (self.clock)(),
                        ipc,
                    };
                    tracing::debug!(batch = %b.id, seq = b.seq.0, records, reason = reason.as_str(), bytes = b.ipc.len(), "batch cut");
                    o.push(b);
                }
                Err(e) => {
                    tracing::error!(error = %e, records, "cannot encode batch: dropped");
                    self.metrics.dropped(DropReason::SpoolError, records);
                }
            }
        }
        self.notify.notify_one();
    }
}

/// Runs until stopped; returns the loss reporter, for the shipper's last word.
async fn run_batcher(mut t: BatcherTask) -> Option<LossReporter> {
    let mut tick = tokio::time::interval(t.tick);
    loop {
        tokio::select! {
            _ = t.stop.cancelled() => break,
            msg = t.rx.recv() => match msg {
                Some(mut records) => {
                    t.enricher.enrich_all(&mut records);
                    let cut = t.batcher.push(&records, (t.clock)());
                    t.emit(cut);
                }
                None => break,
            },
            _ = tick.tick() => {
                let cut = t.batcher.poll_age((t.clock)());
                if cut.is_some() {
                    t.emit(cut.into_iter().collect());
                }
                t.report_losses(false);
            }
        }
    }
    // Records already queued are still taken, then the last partial batch is cut.
    t.rx.close();
    while let Some(mut records) = t.rx.recv().await {
        t.enricher.enrich_all(&mut records);
        let cut = t.batcher.push(&records, (t.clock)());
        t.emit(cut);
    }
    let last = t.batcher.finish();
    t.emit(last.into_iter().collect());
    t.report_losses(true);
    t.losses
}

struct SenderTask {
    client: IngestClient,
    outbox: Arc<Mutex<Outbox>>,
    notify: Arc<Notify>,
    metrics: ShipMetrics,
    attempts: u32,
    backoff: Backoff,
    stop: CancellationToken,
}

async fn run_sender(mut t: SenderTask) {
    // Separate from the per-send backoff: how long to wait while the ingester is down.
    let mut outage = Backoff::new(t.backoff.base, t.backoff.max);
    loop {
        let next = t.outbox.lock().expect("outbox lock").next();
        let Some((b, from)) = next else {
            tokio::select! {
                _ = t.stop.cancelled() => return,
                _ = t.notify.notified() => continue,
            }
        };
        t.backoff.reset();
        match t.client.send(&b, t.attempts, &mut t.backoff, &t.stop).await {
            Outcome::Sent => {
                outage.reset();
                t.outbox.lock().expect("outbox lock").done(&b, from);
                t.metrics.batches_shipped.inc();
                t.metrics.records_shipped.inc_by(b.records);
                tracing::debug!(batch = %b.id, seq = b.seq.0, records = b.records, "batch shipped");
            }
            Outcome::Rejected { status, message } => {
                // An ingester from before dictionary-encoded columns answers 422:
                // the same batch (same id) goes again with plain columns.
                let resent = match (status, plain_ipc(&b.ipc)) {
                    (422, Ok(Some(ipc))) => {
                        tracing::warn!(batch = %b.id, message = %message,
                            "ingester refused dictionary-encoded columns: sending them plain");
                        let plain = EncodedBatch { ipc, ..b.clone() };
                        Some(
                            t.client
                                .send(&plain, t.attempts, &mut t.backoff, &t.stop)
                                .await,
                        )
                    }
                    _ => None,
                };
                match resent {
                    Some(Outcome::Sent) => {
                        outage.reset();
                        t.outbox.lock().expect("outbox lock").done(&b, from);
                        t.metrics.batches_shipped.inc();
                        t.metrics.records_shipped.inc_by(b.records);
                    }
                    Some(Outcome::Unavailable { why, .. }) => {
                        tracing::warn!(batch = %b.id, why = %why, "ingester unavailable: batch spooled");
                        t.metrics.batches_failed.inc();
                        t.outbox.lock().expect("outbox lock").failed(&b, from);
                    }
                    _ => {
                        tracing::error!(batch = %b.id, kind = ?b.kind, records = b.records, status, message = %message,
                            "ingester rejected the batch as bad input: dropped, not retried");
                        t.outbox.lock().expect("outbox lock").done(&b, from);
                        let reason = match b.kind {
                            BatchKind::Flows => DropReason::Rejected,
                            BatchKind::Losses => DropReason::LossesRejected,
                        };
                        t.metrics.dropped(reason, b.records);
                    }
                }
            }
            Outcome::Unavailable { retry_after, why } => {
                t.metrics.batches_failed.inc();
                t.outbox.lock().expect("outbox lock").failed(&b, from);
                let wait = retry_after
                    .unwrap_or_default()
                    .max(outage.next_delay())
                    .min(outage.max);
                tracing::warn!(batch = %b.id, why = %why, retry_in = ?wait, "ingester unavailable: batches spooled");
                tokio::select! {
                    _ = t.stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Outcome::Cancelled => {
                t.outbox.lock().expect("outbox lock").failed(&b, from);
                return;
            }
        }
    }
}

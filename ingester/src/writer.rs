//! The writer thread: the single owner of the WAL, the dedup window and the buffer.
//!
//! Requests arrive on a channel; the thread takes everything pending, writes all of
//! it to the WAL and dedup journal, syncs once (group commit), and only then adds
//! the batches to the buffer and acknowledges. Because one thread does all of this,
//! sequence numbers, dedup decisions and drains are totally ordered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::buffer::{Buffer, BufferedRecord, Drained, SharedStats};
use crate::config::FlushPolicy;
use crate::decode::{BodyEncoding, DecodedBody};
use crate::dedup::DedupWindow;
use crate::error::{IngestError, Result, error_chain};
use crate::metrics::Metrics;
use crate::wal::{BatchId, Wal, WalRecord, WalSeq, is_disk_full};

/// Injected wall clock (dedup timestamps).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What happened to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Durable in the WAL and buffered for the table.
    Stored { rows: usize, seq: WalSeq },
    /// Seen before within the dedup window: acknowledged again, stored once.
    Duplicate { rows: u64 },
}

pub struct AppendRequest {
    pub batch_id: Option<BatchId>,
    pub encoding: BodyEncoding,
    pub body: Bytes,
    pub decoded: DecodedBody,
    /// Memory the batches hold, as reserved in the budget.
    pub memory_bytes: usize,
}

enum Message {
    Append(AppendRequest, oneshot::Sender<Result<Appended>>),
    Drain(oneshot::Sender<Drained>),
    Committed(WalSeq, oneshot::Sender<Result<usize>>),
    Probe(oneshot::Sender<bool>),
    Stop,
}

/// Whether the last WAL write (or probe) succeeded: `/readyz` answers from it.
#[derive(Debug)]
pub struct WalHealth(AtomicBool);

impl Default for WalHealth {
    fn default() -> Self {
        WalHealth(AtomicBool::new(true))
    }
}

impl WalHealth {
    pub fn ok(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, ok: bool) {
        self.0.store(ok, Ordering::Release);
    }
}

/// Sends work to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
    pub health: Arc<WalHealth>,
}

impl WriterHandle {
    pub async fn append(&self, req: AppendRequest) -> Result<Appended> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Message::Append(req, tx))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        rx.await.map_err(|_| IngestError::ShuttingDown)?
    }

    /// Takes the buffer and seals the WAL segment its records are in.
    pub async fn drain(&self) -> Result<Drained> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Message::Drain(tx))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        rx.await.map_err(|_| IngestError::ShuttingDown)
    }

    /// The table holds every record up to `seq`: deletes the WAL segments it
    /// covers; returns how many.
    pub async fn committed(&self, seq: WalSeq) -> Result<usize> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Message::Committed(seq, tx))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        rx.await.map_err(|_| IngestError::ShuttingDown)?
    }

    /// After a failed write: tries whether the WAL takes appends again.
    pub async fn probe(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.try_send(Message::Probe(tx)).is_err() {
            return self.health.ok();
        }
        rx.await.unwrap_or(false)
    }

    /// Stops the writer thread once everything sent before is done.
    pub async fn stop(&self) {
        let _ = self.tx.send(Message::Stop).await;
    }
}

/// State handed to the writer thread.
pub struct WriterState {
    pub wal: Wal,
    pub dedup: DedupWindow,
    pub buffer: Buffer,
    pub next_seq: WalSeq,
    pub stats: Arc<SharedStats>,
    pub policy: FlushPolicy,
    pub flush_now: Arc<Notify>,
    pub metrics: Metrics,
    pub clock: Clock,
    pub health: Arc<WalHealth>,
}

/// Most requests committed in one group.
const MAX_GROUP: usize = 256;

/// Starts the writer thread.
pub fn spawn(state: WriterState) -> Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
    let health = Arc::clone(&state.health);
    let handle = std::thread::Builder::new()
        .name("flowlake-wal".into())
        .spawn(move || state.run(rx))
        .map_err(|e| IngestError::Internal(format!("spawning WAL thread: {e}")))?;
    Ok((WriterHandle { tx, health }, handle))
}

impl WriterState {
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            let mut appends = Vec::new();
            let mut stop = false;
            for m in group {
                if !matches!(m, Message::Append(..)) {
                    self.commit_group(std::mem::take(&mut appends));
                }
                match m {
                    Message::Append(req, reply) => appends.push((req, reply)),
                    Message::Drain(reply) => {
                        let _ = reply.send(self.drain());
                    }
                    Message::Committed(seq, reply) => {
                        let _ = reply.send(self.remove_covered(seq));
                    }
                    Message::Probe(reply) => {
                        let ok = self.wal.probe().is_ok();
                        self.health.set(ok);
                        let _ = reply.send(ok);
                    }
                    Message::Stop => stop = true,
                }
            }
            self.commit_group(appends);
            if stop {
                break;
            }
        }
        tracing::debug!("WAL writer thread stopped");
    }

    fn drain(&mut self) -> Drained {
        // Sealing lets the segment go once this drain is committed; if no new
        // segment can be started, the records stay in this one until later.
        if let Err(e) = self.wal.rotate() {
            tracing::warn!(error = %error_chain(&e), "could not start a new WAL segment");
        }
        let drained = self.buffer.take();
        self.stats.set(self.buffer.stats());
        drained
    }

    fn remove_covered(&mut self, seq: WalSeq) -> Result<usize> {
        let removed = self.wal.remove_covered(seq)?;
        self.metrics
            .wal_bytes
            .set(Wal::disk_bytes(self.wal.dir()) as i64);
        Ok(removed)
    }

    fn commit_group(&mut self, appends: Vec<(AppendRequest, oneshot::Sender<Result<Appended>>)>) {
        if appends.is_empty() {
            return;
        }
        let now = (self.clock)();
        let mut framed = Vec::new();
        let mut ids = Vec::new();
        let mut accepted = Vec::new();
        for (req, reply) in appends {
            if let Some(rows) = req.batch_id.as_ref().and_then(|id| self.dedup.get(id)) {
                let _ = reply.send(Ok(Appended::Duplicate { rows }));
                continue;
            }
            let seq = self.next_seq;
            self.next_seq = WalSeq(seq.0 + 1);
            let record = WalRecord {
                seq,
                batch_id: req.batch_id,
                encoding: req.encoding,
                body: req.body,
            };
            framed.extend(record.frame());
            if let Some(id) = &record.batch_id {
                self.dedup.record(id.clone(), req.decoded.rows as u64, now);
                ids.push(id.clone());
            }
            accepted.push((req.decoded, req.memory_bytes, record.batch_id, seq, reply));
        }
        if accepted.is_empty() {
            return;
        }
        let started = Instant::now();
        let mark = self.wal.mark();
        let durable = self.wal.append_durable_pieces(&framed).and_then(|()| {
            self.dedup.sync(now).inspect_err(|_| {
                // The records must not outlive the refusal: a retry would store
                // them twice.
                self.wal.undo(mark);
            })
        });
        if let Err(e) = durable {
            tracing::error!(error = %error_chain(&e), records = accepted.len(), "WAL write failed; refusing the group");
            self.metrics.error("wal");
            self.health.set(false);
            self.dedup.discard_pending(&ids);
            let full = matches!(&e, IngestError::Wal { source, .. } if is_disk_full(source));
            let detail = error_chain(&e);
            for (.., reply) in accepted {
                let _ = reply.send(Err(if full {
                    IngestError::WalFull(detail.clone())
                } else {
                    IngestError::Internal(detail.clone())
                }));
            }
            return;
        }
        self.health.set(true);
        let framed_bytes: usize = framed.iter().map(Bytes::len).sum();
        tracing::trace!(bytes = framed_bytes, records = accepted.len(), elapsed = ?started.elapsed(), "WAL group synced");
        self.metrics.wal_bytes.inc_by(framed_bytes as i64);
        let t = Instant::now();
        for (decoded, bytes, batch_id, seq, reply) in accepted {
            let rows = decoded.rows;
            self.wal.note_appended(seq);
            self.buffer.push(
                BufferedRecord {
                    seq,
                    batch_id,
                    batches: decoded.batches,
                    rows,
                    bytes,
                },
                t,
            );
            let _ = reply.send(Ok(Appended::Stored { rows, seq }));
        }
        let stats = self.buffer.stats();
        self.stats.set(stats);
        if stats.rows >= self.policy.max_rows || stats.bytes >= self.policy.max_bytes {
            self.flush_now.notify_one();
        }
    }
}

//! The writer thread: the single owner of the WAL, the dedup window and the buffer.
//!
//! Requests arrive on a channel; the thread takes everything pending, writes all of
//! it to the WAL and dedup journal, syncs once (group commit), and only then adds
//! the batches to the buffer and acknowledges. Because one thread does all of this,
//! sequence numbers, dedup decisions and drains are totally ordered.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::buffer::{Buffer, Drained, SharedStats};
use crate::config::FlushPolicy;
use crate::decode::{BodyEncoding, DecodedBody};
use crate::dedup::DedupWindow;
use crate::error::{IngestError, Result, error_chain};
use crate::metrics::Metrics;
use crate::wal::{BatchId, Wal, WalRecord, WalSeq};

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
}

enum Message {
    Append(AppendRequest, oneshot::Sender<Result<Appended>>),
    Drain(oneshot::Sender<Result<Drained>>),
}

/// Sends work to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
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

    /// Takes the buffer and seals the WAL segments it came from.
    pub async fn drain(&self) -> Result<Drained> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Message::Drain(tx))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        rx.await.map_err(|_| IngestError::ShuttingDown)?
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
}

/// Most requests committed in one group.
const MAX_GROUP: usize = 256;

/// Starts the writer thread.
pub fn spawn(state: WriterState) -> Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
    let handle = std::thread::Builder::new()
        .name("flowlake-wal".into())
        .spawn(move || state.run(rx))
        .map_err(|e| IngestError::Internal(format!("spawning WAL thread: {e}")))?;
    Ok((WriterHandle { tx }, handle))
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
            for m in group {
                match m {
                    Message::Append(req, reply) => appends.push((req, reply)),
                    Message::Drain(reply) => {
                        self.commit_group(std::mem::take(&mut appends));
                        let _ = reply.send(self.drain());
                    }
                }
            }
            self.commit_group(appends);
        }
        tracing::debug!("WAL writer thread stopped");
    }

    fn drain(&mut self) -> Result<Drained> {
        let seal = self.wal.rotate()?;
        let drained = self.buffer.take(seal);
        self.stats.set(self.buffer.stats());
        Ok(drained)
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
            if let Some(id) = record.batch_id {
                self.dedup.record(id.clone(), req.decoded.rows as u64, now);
                ids.push(id);
            }
            accepted.push((req.decoded, seq, reply));
        }
        if accepted.is_empty() {
            return;
        }
        let started = Instant::now();
        let durable = self
            .wal
            .append_durable_pieces(&framed)
            .and_then(|()| self.dedup.sync(now));
        if let Err(e) = durable {
            tracing::error!(error = %error_chain(&e), "WAL write failed; refusing the group");
            self.metrics.error("wal");
            self.dedup.discard_pending(&ids);
            for (_, _, reply) in accepted {
                let _ = reply.send(Err(IngestError::Internal(error_chain(&e))));
            }
            return;
        }
        let framed_bytes: usize = framed.iter().map(Bytes::len).sum();
        tracing::trace!(bytes = framed_bytes, records = accepted.len(), elapsed = ?started.elapsed(), "WAL group synced");
        self.metrics.wal_bytes.inc_by(framed_bytes as i64);
        let t = Instant::now();
        for (decoded, seq, reply) in accepted {
            let rows = decoded.rows;
            self.buffer
                .push(decoded.batches, decoded.memory_bytes, seq, t);
            let _ = reply.send(Ok(Appended::Stored { rows, seq }));
        }
        let stats = self.buffer.stats();
        self.stats.set(stats);
        if stats.rows >= self.policy.max_rows || stats.bytes >= self.policy.max_bytes {
            self.flush_now.notify_one();
        }
    }
}

//! Where enriched flow records go: the sink seam.
//!
//! A [`Sink`] writes batches of records somewhere — the Flowlake ingester
//! ([`ingester::IngesterSink`]), an IPFIX collector ([`ipfix::IpfixSink`]), a
//! JSON-lines flow log ([`jsonl::JsonlSink`]). Several run at once: a [`SinkSet`]
//! gives each its own thread and bounded queue, and hands every batch to every
//! queue without waiting. A sink that falls behind fills only its own queue; the
//! batches that then do not fit are dropped for that sink alone and counted
//! (`flowlake_collector_sink_records_dropped_total{sink, reason="queue_full"}`), so
//! the flow reader and the other sinks never wait for it.

pub mod config;
pub mod ingester;
pub mod ipfix;
pub mod jsonl;
mod metrics;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowlake_schemas::FlowRecord;

use crate::enrich::Clock;
use crate::error::{CollectorError, Result};

pub use config::{SinkArgs, SinkConfig, SinkKind};
pub use metrics::{SinkLoss, SinkMetrics};

/// A destination of flow records. Runs on its own thread: calls may block (on a
/// socket, a file, a full downstream queue) without holding up anything but this sink.
pub trait Sink: Send + 'static {
    /// The sink's name: a metric label and the `--sinks` value.
    fn name(&self) -> &'static str;

    /// Writes one batch. Records it could not deliver are reported in the
    /// returned losses (by reason); the rest count as written.
    fn write(&mut self, records: &[FlowRecord], now: DateTime<Utc>) -> Vec<(SinkLoss, u64)>;

    /// Called at least every [`Sink::tick_every`] (template refresh, buffered
    /// output, reconnection).
    fn tick(&mut self, _now: DateTime<Utc>) {}

    /// How often [`Sink::tick`] wants to run.
    fn tick_every(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// Called once after the last batch: flush and close.
    fn close(&mut self, _now: DateTime<Utc>) {}
}

/// A batch shared by all the sinks it goes to.
pub type SharedBatch = Arc<Vec<FlowRecord>>;

struct Running {
    name: &'static str,
    tx: SyncSender<SharedBatch>,
    thread: JoinHandle<()>,
}

/// The running sinks. Feed with [`SinkSet::send`] (never waits); stop with
/// [`SinkSet::close`], which lets each sink finish its queue.
pub struct SinkSet {
    sinks: Vec<Running>,
    metrics: SinkMetrics,
}

impl SinkSet {
    /// Starts one thread per sink, each behind a queue of `queue_batches` batches.
    pub fn start(
        sinks: Vec<Box<dyn Sink>>,
        queue_batches: usize,
        metrics: SinkMetrics,
        clock: Clock,
    ) -> Result<Self> {
        let mut running = Vec::new();
        for sink in sinks {
            let name = sink.name();
            let (tx, rx) = sync_channel(queue_batches.max(1));
            let (m, c) = (metrics.clone(), clock.clone());
            metrics.set_enabled(name);
            let thread = std::thread::Builder::new()
                .name(format!("flowlake-sink-{name}"))
                .spawn(move || run(sink, rx, m, c))
                .map_err(|e| CollectorError::io(format!("spawn sink {name}"), e))?;
            running.push(Running { name, tx, thread });
        }
        Ok(SinkSet {
            sinks: running,
            metrics,
        })
    }

    /// Names of the running sinks.
    pub fn names(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|s| s.name).collect()
    }

    /// Hands the batch to every sink's queue; a full queue drops the batch for
    /// that sink only, counted as `queue_full`.
    pub fn send(&self, records: Vec<FlowRecord>) {
        let n = records.len() as u64;
        if n == 0 {
            return;
        }
        let batch: SharedBatch = Arc::new(records);
        for s in &self.sinks {
            self.metrics.received(s.name, n);
            match s.tx.try_send(Arc::clone(&batch)) {
                Ok(()) => self.metrics.queued(s.name, 1),
                Err(TrySendError::Full(_)) => self.metrics.lost(s.name, SinkLoss::QueueFull, n),
                Err(TrySendError::Disconnected(_)) => {
                    self.metrics.lost(s.name, SinkLoss::Stopped, n)
                }
            }
        }
    }

    /// Closes the queues and waits until every sink has written what they held.
    pub fn close(self) {
        for s in self.sinks {
            drop(s.tx);
            if s.thread.join().is_err() {
                tracing::error!(sink = s.name, "sink thread panicked");
            }
        }
    }
}

/// Opens the configured sinks other than the ingester's, which needs a running
/// shipper: give its channel as `ingester` when `--sinks` names it.
pub fn open(
    cfg: &SinkConfig,
    ingester: Option<tokio::sync::mpsc::Sender<Vec<FlowRecord>>>,
) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for kind in &cfg.sinks {
        match kind {
            SinkKind::Ingester => {
                let tx = ingester.clone().ok_or_else(|| {
                    CollectorError::Config("the ingester sink needs a shipper".into())
                })?;
                sinks.push(Box::new(ingester::IngesterSink::new(tx)));
            }
            SinkKind::Ipfix => {
                let c = cfg.ipfix.clone().ok_or_else(|| {
                    CollectorError::Config("--sinks ipfix needs --ipfix-target".into())
                })?;
                let what = format!("IPFIX target {}", c.target);
                sinks.push(Box::new(
                    ipfix::IpfixSink::open(c).map_err(|e| CollectorError::io(what, e))?,
                ));
            }
            SinkKind::Jsonl => {
                let what = format!("flow log {}", cfg.jsonl.path.display());
                sinks.push(Box::new(
                    jsonl::JsonlSink::open(cfg.jsonl.clone())
                        .map_err(|e| CollectorError::io(what, e))?,
                ));
            }
        }
    }
    Ok(sinks)
}

/// Where the forwarder hands enriched batches: a shipper's channel (waits while
/// it is full) or a [`SinkSet`] (never waits). `false`: the outlet is closed.
pub trait Outlet: Send + 'static {
    fn deliver(&self, records: Vec<FlowRecord>) -> impl Future<Output = bool> + Send;
}

impl Outlet for tokio::sync::mpsc::Sender<Vec<FlowRecord>> {
    async fn deliver(&self, records: Vec<FlowRecord>) -> bool {
        self.send(records).await.is_ok()
    }
}

impl Outlet for SinkSet {
    async fn deliver(&self, records: Vec<FlowRecord>) -> bool {
        self.send(records);
        true
    }
}

impl Outlet for Arc<SinkSet> {
    async fn deliver(&self, records: Vec<FlowRecord>) -> bool {
        self.send(records);
        true
    }
}

fn run(mut sink: Box<dyn Sink>, rx: Receiver<SharedBatch>, metrics: SinkMetrics, clock: Clock) {
    let name = sink.name();
    let every = sink.tick_every();
    let mut next_tick = std::time::Instant::now() + every;
    loop {
        let wait = next_tick.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(wait) {
            Ok(batch) => {
                metrics.queued(name, -1);
                let lost = sink.write(&batch, clock());
                let lost_n: u64 = lost.iter().map(|(_, n)| n).sum();
                for (why, n) in lost {
                    metrics.lost(name, why, n);
                }
                metrics.written(name, (batch.len() as u64).saturating_sub(lost_n));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if std::time::Instant::now() >= next_tick {
            sink.tick(clock());
            next_tick = std::time::Instant::now() + every;
        }
    }
    sink.close(clock());
    tracing::info!(sink = name, "sink stopped");
}

#[cfg(test)]
mod tests;

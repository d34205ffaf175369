//! The Flowlake ingester as a sink: batches go to the [`crate::ship::Shipper`]
//! (Arrow batches, spool on disk while the ingester is away). While the shipper's
//! batcher is behind this sink waits, so its own queue fills and the overflow is
//! counted for this sink only.

use chrono::{DateTime, Utc};
use flowlake_schemas::FlowRecord;
use tokio::sync::mpsc;

use super::{Sink, SinkLoss};

/// Hands records to a running shipper.
pub struct IngesterSink {
    shipper: mpsc::Sender<Vec<FlowRecord>>,
}

impl IngesterSink {
    /// A sink feeding the channel of a shipper ([`crate::ship::Shipper::sender`]).
    pub fn new(shipper: mpsc::Sender<Vec<FlowRecord>>) -> Self {
        IngesterSink { shipper }
    }
}

impl Sink for IngesterSink {
    fn name(&self) -> &'static str {
        "ingester"
    }

    fn write(&mut self, records: &[FlowRecord], _now: DateTime<Utc>) -> Vec<(SinkLoss, u64)> {
        // The sink runs on its own thread, outside the runtime: a blocking send is allowed.
        match self.shipper.blocking_send(records.to_vec()) {
            Ok(()) => Vec::new(),
            Err(_) => vec![(SinkLoss::Closed, records.len() as u64)],
        }
    }
}

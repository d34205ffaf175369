//! The ingester's Prometheus metrics, all names in one place, registered into a
//! registry passed in by the caller.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Every metric of the ingester.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub rows_in: Counter,
    pub bytes_in: Counter,
    pub batches_accepted: Counter,
    pub batches_duplicate: Counter,
    pub batches_rejected: Family<ReasonLabel, Counter>,
    pub wal_bytes: Gauge,
    pub wal_torn_segments: Counter,
    pub wal_replayed_rows: Counter,
    pub buffer_bytes: Gauge,
    pub flushes: Family<ReasonLabel, Counter>,
    pub rows_committed: Counter,
    pub files_committed: Counter,
    pub commit_seconds: Histogram,
    pub compactions: Counter,
    pub compacted_files: Counter,
    pub quarantined: Counter,
    pub errors: Family<KindLabel, Counter>,
    /// Sequenced batches by what the table's `txn`s said at commit
    /// (`already_in_table`, `unverifiable`) and commits redone on a `txn`
    /// conflict (`txn_conflict`).
    pub exactly_once: Family<ReasonLabel, Counter>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            rows_in: Counter::default(),
            bytes_in: Counter::default(),
            batches_accepted: Counter::default(),
            batches_duplicate: Counter::default(),
            batches_rejected: Family::default(),
            wal_bytes: Gauge::default(),
            wal_torn_segments: Counter::default(),
            wal_replayed_rows: Counter::default(),
            buffer_bytes: Gauge::default(),
            flushes: Family::default(),
            rows_committed: Counter::default(),
            files_committed: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            compactions: Counter::default(),
            compacted_files: Counter::default(),
            quarantined: Counter::default(),
            errors: Family::default(),
            exactly_once: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("flowlake_ingester");
        r.register("rows", "Rows accepted", m.rows_in.clone());
        r.register("bytes", "Request body bytes accepted", m.bytes_in.clone());
        r.register(
            "batches_accepted",
            "Requests accepted and stored",
            m.batches_accepted.clone(),
        );
        r.register(
            "batches_duplicate",
            "Requests acknowledged again by batch id",
            m.batches_duplicate.clone(),
        );
        r.register(
            "batches_rejected",
            "Requests refused, by reason",
            m.batches_rejected.clone(),
        );
        r.register(
            "wal_bytes",
            "Bytes in WAL segment files",
            m.wal_bytes.clone(),
        );
        r.register(
            "wal_torn_segments",
            "WAL segments found with a torn tail on replay",
            m.wal_torn_segments.clone(),
        );
        r.register(
            "wal_replayed_rows",
            "Rows recovered from the WAL on start",
            m.wal_replayed_rows.clone(),
        );
        r.register(
            "buffer_bytes",
            "Memory held by accepted, uncommitted data",
            m.buffer_bytes.clone(),
        );
        r.register("flushes", "Buffer flushes, by reason", m.flushes.clone());
        r.register(
            "rows_committed",
            "Rows committed to the table",
            m.rows_committed.clone(),
        );
        r.register(
            "files_committed",
            "Parquet files committed to the table",
            m.files_committed.clone(),
        );
        r.register(
            "commit_seconds",
            "Time to write and commit one flush",
            m.commit_seconds.clone(),
        );
        r.register("compactions", "Compaction passes", m.compactions.clone());
        r.register(
            "compacted_files",
            "Files merged away by compaction",
            m.compacted_files.clone(),
        );
        r.register(
            "quarantined_batches",
            "Batches the table can never take, set aside in the quarantine directory",
            m.quarantined.clone(),
        );
        r.register("errors", "Errors, by kind", m.errors.clone());
        r.register(
            "exactly_once",
            "Batches left out because another commit stored them, stored unverified, and txn conflicts",
            m.exactly_once.clone(),
        );
        m
    }

    pub fn exactly_once(&self, reason: &'static str, n: usize) {
        self.exactly_once
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n as u64);
    }

    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }
}

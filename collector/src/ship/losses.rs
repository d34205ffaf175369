//! Losses as data: every interval, what this node's collector lost since the last
//! report becomes rows of the `losses` table (`flowlake_schemas::losses`).
//!
//! The counters are the ones Prometheus reads ([`LossSources`]: the datapath's
//! `lost_events`/`lost_bytes` and the shipper's `records_dropped`), so the rows
//! and the metrics cannot disagree: a row's `lost` is the difference of one
//! counter between two reports. Loss batches travel as flow batches do, through
//! the outbox and the spool, so a loss while the ingester is away is stored when
//! it returns; the spool never evicts them (see [`super::spool`]), and the flow
//! batches it does evict are counted (`spool_full`) in the next report.
//!
//! The sink seam ([`crate::sink`]) is on the same path: records the `ingester`
//! sink lost before they reached the shipper (`sink_queue_full`, `sink_stopped`,
//! `sink_closed`) are missing from the table too. Losses of the other sinks
//! (IPFIX, the flow log) are not: the table has those records.
//!
//! Not reported here: `rejected` (batches the ingester refused as bad input are
//! rows the ingester writes itself, with its reason: counting them here too would
//! count them twice).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowlake_schemas::LossRow;
use flowlake_schemas::losses::component;

use crate::metrics::LossKind;
use crate::retina::LossSources;
use crate::sink::{SinkLoss, SinkMetrics};

use super::metrics::DropReason;

/// What a node reports its losses as, and how often.
#[derive(Debug, Clone)]
pub struct LossReport {
    pub cluster: String,
    pub node: String,
    pub sources: LossSources,
    /// The sink seam's counters, read for the `ingester` sink (set when it runs).
    pub sinks: Option<SinkMetrics>,
    /// A report is cut at most this often (only when something was lost).
    pub every: Duration,
}

const DATAPATH: [(LossKind, &str, &str); 8] = [
    (LossKind::FlowMapFull, component::KERNEL, "packets"),
    (LossKind::DnsRingbufFull, component::KERNEL, "messages"),
    (LossKind::DropMapFull, component::KERNEL, "packets"),
    (LossKind::TcpMapFull, component::KERNEL, "events"),
    (LossKind::ChannelFull, component::COLLECTOR, "records"),
    (LossKind::DnsTruncated, component::COLLECTOR, "messages"),
    (LossKind::DnsUnparsed, component::COLLECTOR, "messages"),
    (LossKind::DnsTcpGap, component::COLLECTOR, "messages"),
];

const SHIPPER: [DropReason; 4] = [
    DropReason::SpoolFull,
    DropReason::Corrupt,
    DropReason::SpoolError,
    DropReason::Closed,
];

/// The ingester sink's metric label ([`crate::sink::ingester::IngesterSink`]).
const INGESTER: &str = "ingester";

/// The ingester sink's losses: `(reason, kind)`.
const INGESTER_SINK: [(SinkLoss, &str); 3] = [
    (SinkLoss::QueueFull, "sink_queue_full"),
    (SinkLoss::Stopped, "sink_stopped"),
    (SinkLoss::Closed, "sink_closed"),
];

/// One counter's value now: `(component, kind, unit)` → `(lost, bytes)`.
type Totals = HashMap<(&'static str, &'static str, &'static str), (u64, Option<u64>)>;

fn totals(report: &LossReport) -> Totals {
    let sources = &report.sources;
    let mut out = Totals::new();
    if let Some(d) = &sources.datapath {
        for (kind, comp, unit) in DATAPATH {
            let bytes = (kind == LossKind::FlowMapFull).then(|| d.lost_bytes(kind).get());
            out.insert((comp, kind.as_str(), unit), (d.lost_count(kind), bytes));
        }
    }
    if let Some(s) = &sources.ship {
        for reason in SHIPPER {
            let key = (component::SHIPPER, reason.as_str(), "records");
            out.insert(key, (s.dropped_count(reason), None));
        }
    }
    if let Some(s) = &report.sinks {
        for (reason, kind) in INGESTER_SINK {
            let key = (component::COLLECTOR, kind, "records");
            out.insert(key, (s.dropped_count(INGESTER, reason), None));
        }
    }
    out
}

/// The counters at the last report and when it was.
#[derive(Debug)]
pub struct LossReporter {
    report: LossReport,
    last: Totals,
    since: DateTime<Utc>,
}

impl LossReporter {
    /// Starts counting from the counters as they are at `now`: what was lost
    /// before (a previous run's counters start at 0 in this process) is reported
    /// from this start on.
    pub fn new(report: LossReport, now: DateTime<Utc>) -> Self {
        LossReporter {
            last: Totals::new(),
            report,
            since: now,
        }
    }

    /// Whether a report is due at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        (now - self.since).to_std().unwrap_or_default() >= self.report.every
    }

    /// The rows of what was lost since the last report (none when nothing was);
    /// the next report starts at `now`.
    pub fn take(&mut self, now: DateTime<Utc>) -> Vec<LossRow> {
        let current = totals(&self.report);
        let mut rows: Vec<LossRow> = current
            .iter()
            .filter_map(|(key, &(lost, bytes))| {
                let (was, was_bytes) = self.last.get(key).copied().unwrap_or((0, None));
                let (comp, kind, unit) = *key;
                (lost > was).then(|| LossRow {
                    interval_start: self.since,
                    interval_end: now.max(self.since),
                    cluster: Some(self.report.cluster.clone()),
                    node: Some(self.report.node.clone()),
                    component: comp.into(),
                    kind: kind.into(),
                    unit: unit.into(),
                    lost: (lost - was) as i64,
                    lost_bytes: bytes.map(|b| b.saturating_sub(was_bytes.unwrap_or(0)) as i64),
                    detail: None,
                })
            })
            .collect();
        rows.sort_by(|a, b| (&a.component, &a.kind).cmp(&(&b.component, &b.kind)));
        self.last = current;
        self.since = now.max(self.since);
        rows
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::metrics::DatapathMetrics;
    use crate::ship::ShipMetrics;

    #[test]
    fn rows_are_the_counters_differences_per_interval() {
        let mut registry = Registry::default();
        let datapath = DatapathMetrics::new(&mut registry);
        let ship = ShipMetrics::register(&mut registry);
        let t0 = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let mut r = LossReporter::new(
            LossReport {
                cluster: "c".into(),
                node: "n1".into(),
                sources: LossSources {
                    datapath: Some(datapath.clone()),
                    ship: Some(ship.clone()),
                },
                sinks: None,
                every: Duration::from_secs(10),
            },
            t0,
        );
        datapath.lost(LossKind::FlowMapFull).inc_by(5);
        datapath.lost_bytes(LossKind::FlowMapFull).inc_by(500);
        ship.dropped(DropReason::SpoolFull, 40);
        ship.dropped(DropReason::Rejected, 3);
        let t1 = t0 + chrono::Duration::seconds(9);
        assert!(!r.due(t1));
        let t1 = t0 + chrono::Duration::seconds(10);
        assert!(r.due(t1));
        let rows = r.take(t1);
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.component.as_str(), r.kind.as_str(), r.lost, r.lost_bytes))
            .collect();
        assert_eq!(
            got,
            [
                ("kernel", "flow_map_full", 5, Some(500)),
                ("shipper", "spool_full", 40, None)
            ]
        );
        assert!(
            rows.iter()
                .all(|r| r.interval_start == t0 && r.interval_end == t1)
        );
        // Nothing new: no rows; then only the difference, from the last report on.
        let t2 = t1 + chrono::Duration::seconds(10);
        assert!(r.take(t2).is_empty());
        datapath.lost(LossKind::FlowMapFull).inc_by(2);
        datapath.lost_bytes(LossKind::FlowMapFull).inc_by(80);
        let t3 = t2 + chrono::Duration::seconds(10);
        let rows = r.take(t3);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].lost, rows[0].lost_bytes, rows[0].interval_start),
            (2, Some(80), t2)
        );
    }

    /// The ingester sink behind a shipper that takes nothing: what the sink
    /// seam drops for it is a `sink_queue_full` row, and the rows plus what
    /// reached the shipper's channel are every record sent. Another sink's
    /// losses are not losses of the table.
    #[test]
    fn records_the_ingester_sink_drops_are_rows() {
        use crate::sink::{Sink, SinkSet, ingester::IngesterSink};
        let sinks = SinkMetrics::register(&mut Registry::default());
        let t0 = Utc::now();
        let mut r = LossReporter::new(
            LossReport {
                cluster: "c".into(),
                node: "n1".into(),
                sources: LossSources::default(),
                sinks: Some(sinks.clone()),
                every: Duration::ZERO,
            },
            t0,
        );
        let (tx, mut shipper) = tokio::sync::mpsc::channel(1);
        let sink: Box<dyn Sink> = Box::new(IngesterSink::new(tx));
        assert_eq!(sink.name(), INGESTER);
        let set =
            SinkSet::start(vec![sink], 1, sinks.clone(), crate::enrich::system_clock()).unwrap();
        let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
        cfg.rate = 50.0;
        let records = flowlake_gen::records(&cfg);
        let (batches, each) = (20, 5);
        assert!(records.len() >= batches * each);
        for b in records.chunks(each).take(batches) {
            set.send(b.to_vec());
        }
        sinks.lost("jsonl", SinkLoss::QueueFull, 7);
        let rows = r.take(t0 + chrono::Duration::seconds(1));
        // Nothing read the shipper's channel so far: read it now, to the end.
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            while let Some(b) = shipper.blocking_recv() {
                n += b.len();
            }
            n as i64
        });
        set.close();
        let delivered = reader.join().unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.component.as_str(), r.kind.as_str(), r.unit.as_str()))
            .collect();
        assert_eq!(got, [("collector", "sink_queue_full", "records")]);
        assert!(rows[0].lost > 0, "the queue never filled");
        assert_eq!(
            rows[0].lost + delivered,
            (batches * each) as i64,
            "rows + delivered = sent"
        );
    }
}

//! Hourly per-pod rollups of the per-pod questions, kept next to the table.
//!
//! Scanning a day of 100 M flow rows takes seconds on any engine; the questions need far
//! less: per hour, one row per pod and question key (drop reason, peer, DNS query, …)
//! with sums, counts and, for latency, a [`sketch::LatencySketch`]. For each closed hour
//! of the table, [`build`] computes those rows from the question views and writes one
//! Parquet file per question to
//! `_flowlake_rollups/v1/{question}/date=…/hour=…/{fingerprint}.parquet` under the
//! table root (Delta readers and vacuum ignore `_` directories).
//!
//! The fingerprint names the table files the rollup was computed from (paths and sizes
//! of the hour's Add actions at the snapshot it read). A question uses a rollup for an
//! hour only when that fingerprint equals the hour's fingerprint in the snapshot it
//! answers from, so late data, compaction or retention in an hour make its rollup stale
//! (the hour is read from the table) until [`build`] rewrites it: answers never see data
//! twice or miss it. The SQL names the rollup files it reads (the `flowlake_rollup`
//! table function, [`table`]), so concurrent builds cannot change a planned query.
//!
//! Counts and sums from rollups are exact; latency quantiles are within
//! [`sketch::RELATIVE_ACCURACY`] of `percentile_cont` over the same samples.

pub mod answer;
pub mod build;
pub mod policy;
pub mod sketch;
mod store;
pub mod table;

pub use store::RollupStore;

use std::collections::HashMap;
use std::fmt;

use flowlake_schemas::PartitionPath;
use object_store::path::Path;

use crate::questions::{Question, Scope, TimeRange};

/// Root of the rollup files, relative to the table root.
pub const ROLLUP_ROOT: &str = "_flowlake_rollups/v1";

/// Columns every rollup row starts with: whose row it is.
pub const SUBJECT_COLUMNS: [&str; 3] = ["namespace", "pod", "workload"];

/// What a question's rollup keeps per hour and subject: more grouping keys, and the
/// partial aggregates over the question's view (`(expression, column)`).
#[derive(Debug, Clone, Copy)]
pub struct RollupSpec {
    pub keys: &'static [&'static str],
    pub partials: &'static [(&'static str, &'static str)],
}

impl RollupSpec {
    pub fn of(question: Question) -> Self {
        match question {
            Question::Drops => RollupSpec {
                keys: &["direction", "drop_reason"],
                partials: &[
                    ("sum(packets)", "packets"),
                    ("sum(bytes)", "bytes"),
                    ("count(*)", "records"),
                ],
            },
            Question::Latency => RollupSpec {
                keys: &[],
                partials: &[
                    ("count(tcp_srtt_us)", "rtt_samples"),
                    ("latency_sketch(tcp_srtt_us)", "rtt"),
                    ("latency_sketch(tcp_handshake_us)", "handshake"),
                    ("count(dns_latency_us)", "dns_samples"),
                    ("latency_sketch(dns_latency_us)", "dns"),
                ],
            },
            Question::Talkers => RollupSpec {
                keys: &[
                    "direction",
                    "peer_namespace",
                    "peer_pod",
                    "peer_service",
                    "peer_ip",
                ],
                partials: &[("sum(bytes)", "bytes"), ("sum(packets)", "packets")],
            },
            Question::DnsErrors => RollupSpec {
                keys: &["dns_rcode", "dns_query"],
                partials: &[
                    ("count(*)", "errors"),
                    ("max(dns_latency_us)", "max_latency_us"),
                ],
            },
            Question::Retransmits => RollupSpec {
                keys: &["peer_pod", "peer_service", "peer_ip"],
                partials: &[
                    ("sum(tcp_retransmits)", "tcp_retransmits"),
                    ("sum(tcp_resets)", "tcp_resets"),
                    ("sum(packets)", "packets"),
                ],
            },
        }
    }

    /// The spec a question needs for `scope`: ranked over every pod or workload, talkers
    /// only count distinct peers (`peer_pod`, `peer_ip`) and retransmits need no peer,
    /// so the rows read and rolled up are grouped by fewer keys.
    pub fn for_scope(question: Question, scope: &Scope) -> Self {
        let spec = Self::of(question);
        let ranked = matches!(scope, Scope::AllPods | Scope::AllWorkloads);
        let keys: &'static [&'static str] = match question {
            Question::Talkers if ranked => &["peer_pod", "peer_ip"],
            Question::Retransmits if ranked => &[],
            _ => spec.keys,
        };
        RollupSpec { keys, ..spec }
    }

    /// Grouping columns: subject, then keys.
    pub fn group_columns(&self) -> Vec<&'static str> {
        SUBJECT_COLUMNS.iter().chain(self.keys).copied().collect()
    }

    /// All columns of a rollup row, in order.
    pub fn columns(&self) -> Vec<&'static str> {
        let mut c = self.group_columns();
        c.extend(self.partials.iter().map(|(_, name)| *name));
        c
    }

    /// The rollup rows of `question` computed from its view, for the rows `filter` selects.
    pub fn partial_sql(&self, question: Question, filter: &str) -> String {
        let group = self.group_columns().join(", ");
        let partials = self
            .partials
            .iter()
            .map(|(expr, name)| format!("{expr} AS {name}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {group}, {partials} FROM {view} WHERE {filter} GROUP BY {group}",
            view = question.view()
        )
    }
}

/// Which table files a rollup was computed from: FNV-1a over the sorted `(path, size)`
/// of an hour's files, so every reader computes the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    pub fn of_files<'a>(files: impl IntoIterator<Item = (&'a str, u64)>) -> Self {
        let mut sorted: Vec<_> = files.into_iter().collect();
        sorted.sort_unstable();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (path, size) in sorted {
            eat(path.as_bytes());
            eat(&[0]);
            eat(&size.to_le_bytes());
        }
        Fingerprint(h)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Fingerprint)
    }
}

/// Fingerprint of every hour partition of one snapshot.
pub type Fingerprints = HashMap<PartitionPath, Fingerprint>;

/// One rollup file: `{ROLLUP_ROOT}/{question}/{partition}/{fingerprint}.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RollupPath {
    pub question: Question,
    pub partition: PartitionPath,
    pub fingerprint: Fingerprint,
}

impl RollupPath {
    /// Object path relative to the table root.
    pub fn object_path(&self) -> Path {
        Path::from(format!(
            "{ROLLUP_ROOT}/{}/{}/{}.parquet",
            self.question.name(),
            self.partition,
            self.fingerprint
        ))
    }

    pub fn parse(path: &Path) -> Option<Self> {
        let rest = path.as_ref().strip_prefix(ROLLUP_ROOT)?.strip_prefix('/')?;
        let (question, rest) = rest.split_once('/')?;
        let (partition, file) = rest.rsplit_once('/')?;
        Some(RollupPath {
            question: Question::parse(question)?,
            partition: partition.parse().ok()?,
            fingerprint: file.strip_suffix(".parquet")?.parse().ok()?,
        })
    }
}

/// How a question over a range is answered: rollup files for the whole hours they
/// cover, the table for the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coverage {
    /// Rollup files to read (hours with no table files need none).
    pub files: Vec<RollupPath>,
    /// Parts of the range read from the table, in order.
    pub raw: Vec<TimeRange>,
}

impl Coverage {
    /// Covers every whole hour of `range` that has no table files, or whose rollup
    /// matches the snapshot (`current` says which rollups exist).
    pub fn plan(
        question: Question,
        range: &TimeRange,
        fingerprints: &Fingerprints,
        current: impl Fn(&RollupPath) -> bool,
    ) -> Self {
        let mut coverage = Coverage::default();
        let mut push_raw = |from, to| match coverage.raw.last_mut() {
            Some(last) if last.to == from => last.to = to,
            _ => coverage.raw.push(TimeRange { from, to }),
        };
        for partition in PartitionPath::covering(range.from, range.to) {
            let (start, end) = (partition.start(), partition.end());
            let from = start.max(range.from);
            let to = end.min(range.to);
            if from >= to {
                continue;
            }
            let whole = start >= range.from && end <= range.to;
            let covered = whole
                && match fingerprints.get(&partition) {
                    None => true,
                    Some(fingerprint) => {
                        let path = RollupPath {
                            question,
                            partition,
                            fingerprint: *fingerprint,
                        };
                        current(&path) && {
                            coverage.files.push(path);
                            true
                        }
                    }
                };
            if !covered {
                push_raw(from, to);
            }
        }
        coverage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn paths_round_trip_and_fingerprints_ignore_order() {
        let a = Fingerprint::of_files([("x/1.parquet", 10), ("x/2.parquet", 20)]);
        let b = Fingerprint::of_files([("x/2.parquet", 20), ("x/1.parquet", 10)]);
        assert_eq!(a, b);
        assert_ne!(a, Fingerprint::of_files([("x/1.parquet", 10)]));
        let p = RollupPath {
            question: Question::DnsErrors,
            partition: "date=2026-01-01/hour=05".parse().unwrap(),
            fingerprint: a,
        };
        let path = p.object_path();
        assert!(
            path.as_ref()
                .starts_with("_flowlake_rollups/v1/dns-errors/date=2026-01-01/hour=05/")
        );
        assert_eq!(RollupPath::parse(&path), Some(p));
        assert_eq!(
            RollupPath::parse(&Path::from("date=2026-01-01/hour=05/x.parquet")),
            None
        );
    }

    #[test]
    fn coverage_reads_partial_and_stale_hours_from_the_table() {
        let h = |s: &str| -> PartitionPath { s.parse().unwrap() };
        let fps: Fingerprints = [
            (h("date=2026-01-01/hour=00"), Fingerprint(1)),
            (h("date=2026-01-01/hour=01"), Fingerprint(2)),
            (h("date=2026-01-01/hour=02"), Fingerprint(3)),
            (h("date=2026-01-01/hour=04"), Fingerprint(5)),
        ]
        .into();
        // Rollups exist for hours 0, 1 and 4 (hour 2's is stale: fingerprint 9).
        let current = |p: &RollupPath| [1, 2, 5].contains(&p.fingerprint.0);
        let range = TimeRange {
            from: t("2026-01-01T00:30:00Z"),
            to: t("2026-01-01T05:10:00Z"),
        };
        let c = Coverage::plan(Question::Drops, &range, &fps, current);
        let hours: Vec<_> = c.files.iter().map(|f| f.partition.hour()).collect();
        assert_eq!(hours, [1, 4], "hour 3 has no files and needs no rollup");
        assert_eq!(
            c.raw,
            [
                TimeRange {
                    from: t("2026-01-01T00:30:00Z"),
                    to: t("2026-01-01T01:00:00Z")
                },
                TimeRange {
                    from: t("2026-01-01T02:00:00Z"),
                    to: t("2026-01-01T03:00:00Z")
                },
                TimeRange {
                    from: t("2026-01-01T05:00:00Z"),
                    to: t("2026-01-01T05:10:00Z")
                },
            ]
        );
    }
}

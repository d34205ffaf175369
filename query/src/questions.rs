//! The per-pod questions: views over `flows` (one row per pod-side observation, with
//! the counting rules of `docs/schema.md` applied once, here) and the SQL that answers
//! each question for a pod, a workload or every pod over a time range.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// `(name, SQL)` of the views registered next to `flows`.
pub const VIEWS: [(&str, &str); 5] = [
    ("pod_drops", POD_DROPS),
    ("pod_latency", POD_LATENCY),
    ("pod_talkers", POD_TALKERS),
    ("pod_dns_errors", POD_DNS_ERRORS),
    ("pod_retransmits", POD_RETRANSMITS),
];

/// Dropped packets, once for the sending pod (`egress`) and once for the receiving pod (`ingress`).
pub const POD_DROPS: &str = "\
SELECT interval_start, src_namespace AS namespace, src_pod AS pod, src_workload AS workload, \
'egress' AS direction, drop_reason, dst_namespace AS peer_namespace, dst_pod AS peer_pod, dst_ip AS peer_ip, \
node, packets, bytes FROM flows WHERE verdict = 'dropped' AND src_pod IS NOT NULL \
UNION ALL \
SELECT interval_start, dst_namespace, dst_pod, dst_workload, 'ingress', drop_reason, src_namespace, src_pod, src_ip, \
node, packets, bytes FROM flows WHERE verdict = 'dropped' AND dst_pod IS NOT NULL";

/// Latency samples of the local pod: TCP on its `from_pod` rows, DNS on its `to_pod` rows.
pub const POD_LATENCY: &str = "\
SELECT interval_start, src_namespace AS namespace, src_pod AS pod, src_workload AS workload, \
tcp_srtt_us, tcp_handshake_us, dns_latency_us FROM flows \
WHERE observation_point = 'from_pod' AND src_pod IS NOT NULL \
AND (tcp_srtt_us IS NOT NULL OR tcp_handshake_us IS NOT NULL OR dns_latency_us IS NOT NULL) \
UNION ALL \
SELECT interval_start, dst_namespace, dst_pod, dst_workload, tcp_srtt_us, tcp_handshake_us, dns_latency_us FROM flows \
WHERE observation_point = 'to_pod' AND dst_pod IS NOT NULL \
AND (tcp_srtt_us IS NOT NULL OR tcp_handshake_us IS NOT NULL OR dns_latency_us IS NOT NULL)";

/// Forwarded traffic counted once per packet (rows leaving a pod, plus rows entering a
/// pod from a non-pod), attributed to the sending pod (`sent`) and the receiving pod (`received`).
pub const POD_TALKERS: &str = "\
SELECT interval_start, src_namespace AS namespace, src_pod AS pod, src_workload AS workload, 'sent' AS direction, \
dst_namespace AS peer_namespace, dst_pod AS peer_pod, dst_workload AS peer_workload, dst_service AS peer_service, \
dst_ip AS peer_ip, protocol, dst_port AS port, packets, bytes FROM flows \
WHERE verdict = 'forwarded' AND observation_point = 'from_pod' AND src_pod IS NOT NULL \
UNION ALL \
SELECT interval_start, dst_namespace, dst_pod, dst_workload, 'received', src_namespace, src_pod, src_workload, \
src_service, src_ip, protocol, dst_port, packets, bytes FROM flows \
WHERE verdict = 'forwarded' AND dst_pod IS NOT NULL \
AND (observation_point = 'from_pod' OR (observation_point = 'to_pod' AND src_pod IS NULL))";

/// DNS responses other than NOERROR, on the client pod's `to_pod` row.
pub const POD_DNS_ERRORS: &str = "\
SELECT interval_start, dst_namespace AS namespace, dst_pod AS pod, dst_workload AS workload, \
dns_query, dns_qtype, dns_rcode, src_ip AS server_ip, dns_latency_us FROM flows \
WHERE observation_point = 'to_pod' AND dst_pod IS NOT NULL AND dns_rcode IS NOT NULL AND dns_rcode <> 'NOERROR'";

/// TCP retransmits and resets on the sending pod's `from_pod` rows.
pub const POD_RETRANSMITS: &str = "\
SELECT interval_start, src_namespace AS namespace, src_pod AS pod, src_workload AS workload, \
dst_namespace AS peer_namespace, dst_pod AS peer_pod, dst_service AS peer_service, dst_ip AS peer_ip, \
dst_port AS port, tcp_retransmits, tcp_resets, packets FROM flows \
WHERE observation_point = 'from_pod' AND src_pod IS NOT NULL AND tcp_retransmits IS NOT NULL";

/// One of the per-pod questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Question {
    Drops,
    Latency,
    Talkers,
    DnsErrors,
    Retransmits,
}

impl Question {
    pub const ALL: [Question; 5] = [
        Question::Drops,
        Question::Latency,
        Question::Talkers,
        Question::DnsErrors,
        Question::Retransmits,
    ];

    /// Path segment and metric name.
    pub fn name(self) -> &'static str {
        match self {
            Question::Drops => "drops",
            Question::Latency => "latency",
            Question::Talkers => "talkers",
            Question::DnsErrors => "dns-errors",
            Question::Retransmits => "retransmits",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == s)
    }

    pub fn description(self) -> &'static str {
        match self {
            Question::Drops => "Dropped packets by kernel drop reason and direction",
            Question::Latency => {
                "p50/p95/p99 of TCP smoothed RTT, TCP handshake and DNS latency (µs)"
            }
            Question::Talkers => "Traffic by peer (bytes, packets), each packet counted once",
            Question::DnsErrors => "DNS responses other than NOERROR by query and rcode",
            Question::Retransmits => "TCP retransmits and resets by peer",
        }
    }

    pub fn view(self) -> &'static str {
        match self {
            Question::Drops => "pod_drops",
            Question::Latency => "pod_latency",
            Question::Talkers => "pod_talkers",
            Question::DnsErrors => "pod_dns_errors",
            Question::Retransmits => "pod_retransmits",
        }
    }

    /// The measure a time series of this question plots, per bucket.
    pub fn series_measure(self) -> &'static str {
        match self {
            Question::Drops => "sum(packets)",
            Question::Latency => "percentile_cont(0.95) WITHIN GROUP (ORDER BY tcp_srtt_us)",
            Question::Talkers => "sum(bytes)",
            Question::DnsErrors => "count(*)",
            Question::Retransmits => "sum(tcp_retransmits)",
        }
    }
}

/// Whose question it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every pod, one row (or group) per pod.
    AllPods,
    /// Every workload, one row (or group) per workload.
    AllWorkloads,
    Pod {
        namespace: String,
        pod: String,
    },
    Workload {
        namespace: String,
        workload: String,
    },
}

/// One per-pod question to answer: what, whose, when, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionRequest {
    pub question: Question,
    pub scope: Scope,
    pub range: TimeRange,
    /// Conditions on the subject columns only (`namespace`, `pod`, `workload`), which
    /// rollups can answer too (Grafana's ad-hoc filters).
    pub subject_filters: Vec<String>,
    /// Further SQL conditions on the question's view (answered from the flow rows).
    pub extra: Vec<String>,
    pub limit: usize,
    /// Only from the flow rows, never from rollups (exact latency percentiles).
    pub exact: bool,
}

impl QuestionRequest {
    pub fn new(question: Question, scope: Scope, range: TimeRange, limit: usize) -> Self {
        QuestionRequest {
            question,
            scope,
            range,
            subject_filters: Vec::new(),
            extra: Vec::new(),
            limit,
            exact: false,
        }
    }

    /// The SQL answering it from the flow rows.
    pub fn exact_sql(&self) -> String {
        let conditions: Vec<String> = self
            .subject_filters
            .iter()
            .chain(&self.extra)
            .cloned()
            .collect();
        question_sql(
            self.question,
            &self.scope,
            &self.range,
            &conditions,
            self.limit,
        )
    }
}

/// Quotes a string literal for SQL.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A half-open time range `[from, to)` on `interval_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Parses an RFC 3339 time or epoch milliseconds, between 1970 and 9999.
pub fn parse_time(s: &str) -> crate::error::Result<DateTime<Utc>> {
    let t = match s.parse::<i64>() {
        Ok(ms) => DateTime::from_timestamp_millis(ms),
        Err(_) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                crate::error::QueryError::BadRequest(format!(
                    "time {s:?} is not RFC 3339 or epoch ms: {e}"
                ))
            })
            .map(Some)?,
    };
    t.filter(|t| (1970..=9999).contains(&chrono::Datelike::year(t)))
        .ok_or_else(|| {
            crate::error::QueryError::BadRequest(format!("time {s} is not between 1970 and 9999"))
        })
}

/// Longest range a question or Grafana panel may ask for (about ten years): a range
/// is cut into hours to find rollups and partitions.
pub const MAX_RANGE_DAYS: i64 = 3660;

impl TimeRange {
    /// `[from, to)`, refused when empty or longer than [`MAX_RANGE_DAYS`].
    pub fn checked(from: DateTime<Utc>, to: DateTime<Utc>) -> crate::error::Result<Self> {
        if from >= to {
            return Err(crate::error::QueryError::BadRequest(
                "`from` must be before `to`".into(),
            ));
        }
        if (to - from).num_days() > MAX_RANGE_DAYS {
            return Err(crate::error::QueryError::BadRequest(format!(
                "the range {from} .. {to} is longer than {MAX_RANGE_DAYS} days"
            )));
        }
        Ok(TimeRange { from, to })
    }

    /// `interval_start` predicate (string literals, coerced to the column's type, so the
    /// same text works in DataFusion and DuckDB).
    pub fn predicate(&self) -> String {
        format!(
            "interval_start >= '{}' AND interval_start < '{}'",
            self.from.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.to.to_rfc3339_opts(SecondsFormat::Micros, true)
        )
    }
}

impl Scope {
    pub(crate) fn predicate(&self) -> Option<String> {
        match self {
            Scope::AllPods | Scope::AllWorkloads => None,
            Scope::Pod { namespace, pod } => Some(format!(
                "namespace = {} AND pod = {}",
                quote(namespace),
                quote(pod)
            )),
            Scope::Workload {
                namespace,
                workload,
            } => Some(format!(
                "namespace = {} AND workload = {}",
                quote(namespace),
                quote(workload)
            )),
        }
    }

    /// Columns that name the subject of each row when the scope is a whole cluster.
    fn subject(&self) -> &'static [&'static str] {
        match self {
            Scope::AllPods => &["namespace", "pod"],
            Scope::AllWorkloads => &["namespace", "workload"],
            _ => &[],
        }
    }
}

/// `WHERE` clause of a question: time range, scope and extra filters.
pub fn where_clause(range: &TimeRange, scope: &Scope, extra: &[String]) -> String {
    let mut parts = vec![range.predicate()];
    parts.extend(scope.predicate());
    parts.extend(extra.iter().cloned());
    parts.join(" AND ")
}

/// How a question's measures are computed: from flow rows, or by merging the partial
/// aggregates of `RollupSpec` (rollup rows and table rows rolled up the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measures {
    Exact,
    Merged,
}

/// The SQL that answers `question` for `scope` over `range`, at most `limit` rows, from
/// the flow rows.
pub fn question_sql(
    question: Question,
    scope: &Scope,
    range: &TimeRange,
    extra: &[String],
    limit: usize,
) -> String {
    let source = format!(
        "{} WHERE {}",
        question.view(),
        where_clause(range, scope, extra)
    );
    render(question, scope, &source, Measures::Exact, limit)
}

fn merged(m: Measures, exact: &'static str, merged: &'static str) -> &'static str {
    match m {
        Measures::Exact => exact,
        Measures::Merged => merged,
    }
}

/// Sample counts of RTT and DNS, and p50/p95/p99 of all three latencies.
fn latency_measures(m: Measures) -> String {
    let metrics = [
        ("tcp_srtt_us", "rtt"),
        ("tcp_handshake_us", "handshake"),
        ("dns_latency_us", "dns"),
    ];
    metrics
        .iter()
        .map(|(column, prefix)| {
            let quantiles = [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)].map(|(name, p)| {
                let measure = match m {
                    Measures::Exact => {
                        format!("percentile_cont({p}) WITHIN GROUP (ORDER BY {column})")
                    }
                    Measures::Merged => format!("sketch_quantile({prefix}, {p})"),
                };
                format!("{measure} AS {prefix}_{name}_us")
            });
            let samples = match m {
                _ if *prefix == "handshake" => String::new(),
                Measures::Exact => format!("count({column}) AS {prefix}_samples, "),
                Measures::Merged => {
                    format!("coalesce(sum({prefix}_samples), 0) AS {prefix}_samples, ")
                }
            };
            format!("{samples}{}", quantiles.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The question's `SELECT … FROM {source} … LIMIT`.
pub(crate) fn render(
    question: Question,
    scope: &Scope,
    source: &str,
    m: Measures,
    limit: usize,
) -> String {
    let subject = scope.subject();
    let with_subject = |cols: &[&str]| -> String {
        subject
            .iter()
            .chain(cols.iter())
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let group = |cols: &[&str]| {
        let g = with_subject(cols);
        if g.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {g}")
        }
    };
    let select = |cols: &[&str]| {
        let s = with_subject(cols);
        if s.is_empty() {
            String::new()
        } else {
            format!("{s}, ")
        }
    };
    let order_tail = |cols: &[&str]| {
        let s = with_subject(cols);
        if s.is_empty() {
            String::new()
        } else {
            format!(", {s}")
        }
    };
    match question {
        Question::Drops => format!(
            "SELECT {sel}sum(packets) AS packets, sum(bytes) AS bytes, {records} AS records \
             FROM {source}{grp} ORDER BY packets DESC{ord} LIMIT {limit}",
            records = merged(m, "count(*)", "sum(records)"),
            sel = select(&["drop_reason", "direction"]),
            grp = group(&["drop_reason", "direction"]),
            ord = order_tail(&["drop_reason", "direction"]),
        ),
        Question::Latency => format!(
            "SELECT {sel}{measures} \
             FROM {source}{grp} ORDER BY rtt_p99_us DESC NULLS LAST{ord} LIMIT {limit}",
            sel = select(&[]),
            measures = latency_measures(m),
            grp = group(&[]),
            ord = order_tail(&[]),
        ),
        Question::Talkers => {
            if subject.is_empty() {
                // One subject: its peers.
                format!(
                    "SELECT direction, peer_namespace, coalesce(peer_pod, peer_service, peer_ip) AS peer, \
                     sum(bytes) AS bytes, sum(packets) AS packets FROM {source} \
                     GROUP BY direction, peer_namespace, coalesce(peer_pod, peer_service, peer_ip) \
                     ORDER BY bytes DESC, direction, peer_namespace, peer LIMIT {limit}"
                )
            } else {
                format!(
                    "SELECT {sel}sum(bytes) AS bytes, sum(packets) AS packets, \
                     count(DISTINCT coalesce(peer_pod, peer_ip)) AS peers \
                     FROM {source}{grp} ORDER BY bytes DESC{ord} LIMIT {limit}",
                    sel = select(&[]),
                    grp = group(&[]),
                    ord = order_tail(&[]),
                )
            }
        }
        Question::DnsErrors => format!(
            "SELECT {sel}{errors} AS errors, {max} AS max_latency_us \
             FROM {source}{grp} ORDER BY errors DESC{ord} LIMIT {limit}",
            errors = merged(m, "count(*)", "sum(errors)"),
            max = merged(m, "max(dns_latency_us)", "max(max_latency_us)"),
            sel = select(&["dns_rcode", "dns_query"]),
            grp = group(&["dns_rcode", "dns_query"]),
            ord = order_tail(&["dns_rcode", "dns_query"]),
        ),
        Question::Retransmits => {
            let by: &[&str] = if subject.is_empty() { &["peer"] } else { &[] };
            let peer = if subject.is_empty() {
                "coalesce(peer_pod, peer_service, peer_ip) AS peer, "
            } else {
                ""
            };
            let grp = if subject.is_empty() {
                " GROUP BY coalesce(peer_pod, peer_service, peer_ip)".to_string()
            } else {
                group(&[])
            };
            format!(
                "SELECT {sel}{peer}sum(tcp_retransmits) AS retransmits, sum(tcp_resets) AS resets, \
                 sum(packets) AS packets FROM {source}{grp} \
                 ORDER BY retransmits DESC{ord} LIMIT {limit}",
                sel = select(&[]),
                ord = order_tail(by),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_names() {
        assert_eq!(quote("o'neil"), "'o''neil'");
        for q in Question::ALL {
            assert_eq!(Question::parse(q.name()), Some(q));
        }
        let range = TimeRange {
            from: "2026-01-01T00:00:00Z".parse().unwrap(),
            to: "2026-01-01T01:00:00Z".parse().unwrap(),
        };
        let sql = question_sql(
            Question::Drops,
            &Scope::Pod {
                namespace: "a".into(),
                pod: "b'c".into(),
            },
            &range,
            &[],
            10,
        );
        assert!(sql.contains("pod = 'b''c'"), "{sql}");
        assert!(
            sql.contains("interval_start >= '2026-01-01T00:00:00.000000Z'"),
            "{sql}"
        );
    }
}

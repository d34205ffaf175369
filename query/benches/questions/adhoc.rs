//! Ad-hoc SQL as users send it to `/api/v1/sql` and Grafana, for the same comparison
//! with DuckDB as the per-pod questions: a pod's flows over an hour, top talkers by
//! namespace, drops by reason per node, DNS by rcode, a join of a pod's drops to its
//! talkers, and Grafana time series per minute (the SQL the Grafana datasource builds,
//! `query/src/http/grafana.rs`). Every query orders its rows completely, so both
//! engines' answers compare row by row.

use flowlake_query::questions::{TimeRange, quote};

/// Whose flows the per-pod queries ask about, and when.
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    /// The whole range of the benchmark.
    pub range: &'a TimeRange,
    /// One hour of it (the pod's flows over an hour).
    pub hour: &'a TimeRange,
}

/// The Grafana datasource's time-series SQL for one question view (`grafana.rs`:
/// `date_bin` buckets of the panel interval, one series per key).
fn grafana_series(bucket_ms: i64, key: &str, measure: &str, view: &str, filter: &str) -> String {
    format!(
        "SELECT date_bin(INTERVAL '{bucket_ms} milliseconds', interval_start, TIMESTAMP '1970-01-01T00:00:00Z') AS t, \
         {key} AS k, {measure} AS v FROM {view} WHERE {filter} GROUP BY 1, 2 ORDER BY 2, 1"
    )
}

/// `(name, SQL)` of every ad-hoc query.
pub fn queries(s: &Subject) -> Vec<(String, String)> {
    let range = s.range.predicate();
    let hour = s.hour.predicate();
    let (ns, pod) = (quote(s.namespace), quote(s.pod));
    let out = vec![
        (
            "pod-hour",
            format!(
                "SELECT interval_start, observation_point, protocol, src_ip, src_port, dst_namespace, \
                 dst_pod, dst_ip, dst_port, verdict, drop_reason, packets, bytes FROM flows \
                 WHERE {hour} AND src_namespace = {ns} AND src_pod = {pod} \
                 ORDER BY interval_start, observation_point, src_port, dst_ip, dst_port, protocol, \
                 verdict, drop_reason, packets, bytes LIMIT 1000"
            ),
        ),
        (
            "talkers-by-namespace",
            format!(
                "SELECT src_namespace, dst_namespace, sum(bytes) AS bytes, sum(packets) AS packets, \
                 count(*) AS records FROM flows \
                 WHERE {range} AND verdict = 'forwarded' AND observation_point = 'from_pod' \
                 GROUP BY 1, 2 ORDER BY bytes DESC, 1, 2 LIMIT 20"
            ),
        ),
        (
            "drops-by-node",
            format!(
                "SELECT node, drop_reason, sum(packets) AS packets, count(*) AS records FROM flows \
                 WHERE {range} AND verdict = 'dropped' GROUP BY 1, 2 ORDER BY 1, packets DESC, 2"
            ),
        ),
        (
            "dns-by-rcode",
            format!(
                "SELECT dns_rcode, dns_qtype, count(*) AS responses, max(dns_latency_us) AS max_latency_us, \
                 avg(dns_latency_us) AS mean_latency_us FROM flows \
                 WHERE {range} AND dns_rcode IS NOT NULL GROUP BY 1, 2 ORDER BY responses DESC, 1, 2"
            ),
        ),
        (
            "pod-drops-join-talkers",
            format!(
                "WITH d AS (SELECT dst_ip AS peer, drop_reason, sum(packets) AS dropped FROM flows \
                 WHERE {range} AND src_namespace = {ns} AND src_pod = {pod} AND verdict = 'dropped' \
                 GROUP BY 1, 2), \
                 t AS (SELECT dst_ip AS peer, sum(bytes) AS bytes, sum(packets) AS packets FROM flows \
                 WHERE {range} AND src_namespace = {ns} AND src_pod = {pod} AND verdict = 'forwarded' \
                 AND observation_point = 'from_pod' GROUP BY 1) \
                 SELECT d.peer, d.drop_reason, d.dropped, t.bytes, t.packets FROM d LEFT JOIN t ON d.peer = t.peer \
                 ORDER BY d.dropped DESC, d.peer, d.drop_reason LIMIT 100"
            ),
        ),
        (
            "series-drops-per-minute",
            grafana_series(60_000, "drop_reason", "sum(packets)", "pod_drops", &range),
        ),
        (
            "series-pod-talkers-per-minute",
            grafana_series(
                60_000,
                "coalesce(peer_pod, peer_service, peer_ip)",
                "sum(bytes)",
                "pod_talkers",
                &format!("{range} AND namespace = {ns} AND pod = {pod}"),
            ),
        ),
    ];
    out.into_iter()
        .map(|(name, sql)| (format!("adhoc/{name}"), sql))
        .collect()
}

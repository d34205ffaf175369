//! The SQL shapes a namespace-scoped token tries.

/// SQL written to get around the scope, each valid in DataFusion and DuckDB (so DuckDB
/// computes what the token should get). `ns` is the team's namespace, `other` another.
pub(super) fn shapes(ns: &str, other: &str) -> Vec<String> {
    let hidden = format!("src_namespace <> '{ns}' AND dst_namespace <> '{ns}'");
    vec![
        "SELECT src_namespace AS s, dst_namespace AS d, src_pod AS sp, dst_pod AS dp, bytes FROM flows WHERE verdict = 'dropped'".into(),
        "SELECT count(*) AS n, sum(bytes) AS b, sum(packets) AS p FROM flows".into(),
        "SELECT src_namespace AS s, count(*) AS n FROM flows GROUP BY src_namespace".into(),
        "SELECT dst_namespace AS d, sum(bytes) AS b FROM flows GROUP BY 1 HAVING sum(bytes) > 0".into(),
        format!("SELECT count(*) AS n FROM flows WHERE src_namespace = '{other}'"),
        format!("SELECT count(*) AS n FROM flows WHERE {hidden}"),
        "SELECT count(*) AS n FROM flows WHERE true OR src_namespace IS NULL".into(),
        "SELECT count(*) AS n FROM flows WHERE src_namespace IS NULL OR dst_namespace IS NULL".into(),
        format!("SELECT count(*) AS n FROM flows WHERE src_namespace NOT IN ('{ns}')"),
        "SELECT DISTINCT src_namespace AS s, src_pod AS p FROM flows".into(),
        "SELECT min(src_namespace) AS lo, max(src_namespace) AS hi, min(dst_namespace) AS dlo, max(dst_namespace) AS dhi, count(DISTINCT src_pod) AS pods FROM flows".into(),
        // Joins, the table with itself.
        "SELECT a.src_namespace AS s, count(*) AS n FROM (SELECT DISTINCT src_namespace, src_pod FROM flows) a \
         JOIN (SELECT DISTINCT dst_namespace, dst_pod FROM flows) b ON a.src_pod = b.dst_pod GROUP BY 1".into(),
        "SELECT a.ns AS a_ns, b.ns AS b_ns FROM (SELECT DISTINCT src_namespace AS ns FROM flows) a \
         FULL OUTER JOIN (SELECT DISTINCT dst_namespace AS ns FROM flows) b ON a.ns = b.ns".into(),
        "SELECT a.ns AS a_ns, b.ns AS b_ns FROM (SELECT DISTINCT src_namespace AS ns FROM flows) a \
         LEFT JOIN (SELECT DISTINCT dst_namespace AS ns FROM flows WHERE verdict = 'dropped') b ON a.ns = b.ns".into(),
        "SELECT count(*) AS n FROM (SELECT DISTINCT src_namespace FROM flows) a CROSS JOIN (SELECT DISTINCT dst_pod FROM flows) b".into(),
        "SELECT count(*) AS n FROM flows a, (SELECT DISTINCT src_namespace AS ns FROM flows) b WHERE a.dst_namespace = b.ns".into(),
        // Subqueries.
        format!("SELECT count(*) AS n FROM flows WHERE src_pod IN (SELECT dst_pod FROM flows WHERE dst_namespace = '{other}')"),
        "SELECT DISTINCT src_namespace AS s FROM flows f WHERE EXISTS (SELECT 1 FROM (SELECT DISTINCT dst_namespace FROM flows) g WHERE g.dst_namespace = f.src_namespace)".into(),
        "SELECT (SELECT count(*) FROM flows) AS n, (SELECT max(bytes) FROM flows) AS m".into(),
        "SELECT x.a AS s FROM (SELECT src_namespace AS a, dst_namespace AS b FROM flows) x WHERE x.b IS NOT NULL GROUP BY x.a".into(),
        "SELECT count(*) AS n FROM (SELECT * FROM (SELECT * FROM (SELECT * FROM flows) a) b) c".into(),
        "SELECT count(*) AS n FROM (SELECT * FROM flows LIMIT 10) t".into(),
        // CTEs.
        "WITH x AS (SELECT * FROM flows) SELECT count(*) AS n, sum(bytes) AS b FROM x".into(),
        "WITH a AS (SELECT src_namespace AS ns FROM flows), b AS (SELECT dst_namespace AS ns FROM flows) \
         SELECT ns, count(*) AS n FROM (SELECT ns FROM a UNION ALL SELECT ns FROM b) u GROUP BY ns".into(),
        // Set operations.
        "SELECT src_namespace AS ns FROM flows UNION SELECT dst_namespace FROM flows".into(),
        "SELECT 'x' AS ns UNION ALL SELECT DISTINCT src_namespace FROM flows".into(),
        "SELECT src_namespace AS ns FROM flows INTERSECT SELECT dst_namespace FROM flows".into(),
        format!("SELECT dst_namespace AS ns FROM flows EXCEPT SELECT '{ns}'"),
        // Window functions.
        "SELECT ns, n, rank() OVER (ORDER BY n DESC, ns) AS r FROM (SELECT src_namespace AS ns, count(*) AS n FROM flows GROUP BY 1) t".into(),
        "SELECT DISTINCT count(*) OVER () AS n FROM flows".into(),
        "SELECT ns, max(rn) AS m FROM (SELECT src_namespace AS ns, row_number() OVER (PARTITION BY src_namespace ORDER BY bytes) AS rn FROM flows) t GROUP BY ns".into(),
        "SELECT ns, max(b) AS b FROM (SELECT dst_namespace AS ns, sum(bytes) OVER (PARTITION BY dst_namespace) AS b FROM flows) t GROUP BY ns".into(),
        // Expressions that name other namespaces, grouping sets.
        format!("SELECT CASE WHEN src_namespace = '{other}' THEN 'other' ELSE 'mine' END AS k, count(*) AS n FROM flows GROUP BY 1"),
        "SELECT src_namespace AS ns, count(*) AS n FROM flows GROUP BY ROLLUP(src_namespace)".into(),
        "SELECT count(*) AS n FROM \"flows\"".into(),
        "SELECT count(*) AS n FROM flows WHERE interval_start >= '2026-01-01T01:00:00Z'".into(),
        // An expression that fails on a row of another namespace only: it must never run there.
        format!("SELECT count(*) AS n FROM flows WHERE CASE WHEN {hidden} THEN CAST(concat('x', src_pod) AS INT) ELSE 1 END = 1"),
        // The per-pod views.
        "SELECT namespace, pod, direction, sum(packets) AS p FROM pod_drops GROUP BY 1, 2, 3".into(),
        "SELECT namespace, peer_namespace, sum(bytes) AS b FROM pod_talkers GROUP BY 1, 2".into(),
        "SELECT namespace, count(*) AS n, sum(tcp_srtt_us) AS s FROM pod_latency GROUP BY 1".into(),
        "SELECT namespace, dns_rcode, count(*) AS n FROM pod_dns_errors GROUP BY 1, 2".into(),
        "SELECT namespace, peer_namespace, sum(tcp_retransmits) AS r FROM pod_retransmits GROUP BY 1, 2".into(),
        "SELECT t.namespace AS ns, count(*) AS n FROM pod_talkers t JOIN (SELECT DISTINCT src_pod FROM flows) f ON t.peer_pod = f.src_pod GROUP BY 1".into(),
    ]
}

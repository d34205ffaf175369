//! A namespace-scoped token against SQL and endpoints written to get around its scope:
//! each answer is compared with DuckDB running the same SQL over the same Delta table
//! filtered to the token's namespaces (and, as a check of that reference, the admin
//! token's answer with DuckDB's over the whole table); question answers with the admin
//! token's rows filtered in DuckDB. Never a row of another namespace.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flowlake_query::metrics::QueryMetrics;
use flowlake_query::questions::VIEWS;
use flowlake_query::rollup::build::{RollupPolicy, build_rollups};
use flowlake_query::{AppState, QueryConfig, QueryEngine, router};
use flowlake_service::auth::TokenEntry;
use flowlake_service::{Auth, Scope, TokenStore, hash_token};
use serde_json::{Value, json};

use crate::support::*;
use rows::{DuckAnswer, array_rows, duck_answers, object_rows};
use shapes::shapes;

mod rows;
mod shapes;

const ADMIN: &str = "admin-secret";
const TEAM: &str = "team-secret";
const NOBODY: &str = "nobody-secret";

struct Fixture {
    base: String,
    table: std::path::PathBuf,
    /// The team token's namespaces.
    mine: Vec<String>,
    /// A namespace of the table the team may not read, with one of its pods.
    other: (String, String),
    dir: tempfile::TempDir,
}

fn write_tokens(path: &Path, mine: &[String]) {
    let entry = |name: &str, token: &str, scopes: Vec<Scope>, ns: Option<Vec<String>>| TokenEntry {
        name: name.into(),
        sha256: hash_token(token),
        scopes,
        namespaces: ns,
    };
    let tokens = [
        entry("ops", ADMIN, vec![Scope::Admin], None),
        entry(
            "team",
            TEAM,
            vec![Scope::Read, Scope::Export],
            Some(mine.to_vec()),
        ),
        entry("nobody", NOBODY, vec![Scope::Read], Some(vec![])),
    ];
    std::fs::write(path, json!({ "tokens": tokens }).to_string()).unwrap();
}

/// A private copy of the gen table (rollups are built into it), served with tokens and
/// a clock at 2026-01-01T12:00Z (so Grafana's "last day" covers the data).
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("flows");
    write_gen_table(&table).await;
    let cfg = QueryConfig::for_tests(table.to_str().unwrap());
    let engine = Arc::new(
        QueryEngine::open(&cfg.engine(), QueryMetrics::unregistered())
            .await
            .unwrap(),
    );
    let report = build_rollups(&engine, chrono::Utc::now(), RollupPolicy::default())
        .await
        .unwrap();
    assert!(report.built > 0, "{report:?}");

    let batches = engine
        .plan(
            "SELECT src_namespace AS ns, min(src_pod) AS pod FROM flows \
             WHERE src_namespace IS NOT NULL GROUP BY 1 ORDER BY 1",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let json = flowlake_query::format::encode_all(
        flowlake_query::OutputFormat::Json,
        batches[0].schema(),
        &batches,
    )
    .unwrap();
    let namespaces: Vec<Value> = serde_json::from_slice(&json).unwrap();
    assert!(namespaces.len() >= 3, "{namespaces:?}");
    let ns = |i: usize| namespaces[i]["ns"].as_str().unwrap().to_string();
    let mine = vec![ns(0)];
    let other = (ns(1), namespaces[1]["pod"].as_str().unwrap().to_string());

    let tokens = dir.path().join("tokens.json");
    write_tokens(&tokens, &mine);
    let mut state = AppState::new(engine, 4);
    state.auth = Auth::Tokens(Arc::new(TokenStore::open(&tokens, Duration::ZERO).unwrap()));
    let noon: chrono::DateTime<chrono::Utc> = "2026-01-01T12:00:00Z".parse().unwrap();
    state.clock = Arc::new(move || noon);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Fixture {
        base,
        table,
        mine,
        other,
        dir,
    }
}

async fn get_json(
    f: &Fixture,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, text) = request(&f.base, method, path, &body, Some(token)).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

async fn sql(f: &Fixture, token: &str, q: &str) -> (u16, Value) {
    get_json(f, token, "POST", "/api/v1/sql", Some(json!({ "sql": q }))).await
}

/// Runs `queries` in DuckDB over the Delta table as python deltalake reads it, once
/// over every row (`all`) and once over the rows of `namespaces` (`scoped`), with the
/// service's per-pod views on top; `filter` (with `rows`) is run on a table `admin`
/// holding those rows.
fn duckdb(
    f: &Fixture,
    queries: &[String],
    admin: &[(Value, String)],
) -> (Vec<DuckAnswer>, Vec<DuckAnswer>, Vec<DuckAnswer>) {
    let spec = json!({
        "table": f.table,
        "namespaces": f.mine,
        "views": VIEWS.iter().map(|(n, s)| json!([n, s])).collect::<Vec<_>>(),
        "queries": queries,
        "admin": admin.iter().map(|(rows, q)| json!([rows, q])).collect::<Vec<_>>(),
    });
    let spec_path = f.dir.path().join("duck.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let out = python(&format!(
        r#"
import json, decimal, duckdb, pyarrow as pa
from deltalake import DeltaTable
spec = json.load(open({path:?}))
raw = DeltaTable(spec["table"]).to_pyarrow_table()
def norm(v):
    if v is None or isinstance(v, (int, float, str)): return v
    if isinstance(v, decimal.Decimal): return float(v)
    return str(v)
def run(c, q):
    try:
        r = c.execute(q)
        return {{"columns": [d[0] for d in r.description], "rows": [[norm(x) for x in row] for row in r.fetchall()]}}
    except Exception as e:
        return {{"error": str(e)}}
def conn(scoped):
    c = duckdb.connect()
    c.register("raw", raw)
    ns = ", ".join("'" + n.replace("'", "''") + "'" for n in spec["namespaces"])
    where = f" WHERE src_namespace IN ({{ns}}) OR dst_namespace IN ({{ns}})" if scoped else ""
    c.execute("CREATE VIEW flows AS SELECT * FROM raw" + where)
    for name, sql in spec["views"]:
        c.execute(f"CREATE VIEW {{name}} AS {{sql}}")
    return c
out = {{"all": [run(conn(False), q) for q in spec["queries"]],
       "scoped": [run(conn(True), q) for q in spec["queries"]], "admin": []}}
for rows, q in spec["admin"]:
    c = duckdb.connect()
    c.register("admin", pa.Table.from_pylist(rows) if rows else pa.table({{"namespace": pa.array([], pa.string())}}))
    out["admin"].append(run(c, q.replace("$NS", ", ".join("'" + n + "'" for n in spec["namespaces"]))))
print(json.dumps(out))
"#,
        path = spec_path.to_str().unwrap()
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        duck_answers(&v["all"]),
        duck_answers(&v["scoped"]),
        duck_answers(&v["admin"]),
    )
}

/// Whether every row with both flow ends has one of `mine`.
fn no_foreign_flow_rows(answer: &Value, mine: &[String]) -> bool {
    answer.as_array().is_none_or(|rows| {
        rows.iter().all(|r| match (r.get("s"), r.get("d")) {
            (Some(s), Some(d)) => mine
                .iter()
                .any(|n| Some(n.as_str()) == s.as_str() || Some(n.as_str()) == d.as_str()),
            _ => true,
        })
    })
}

#[tokio::test]
async fn namespace_scoped_token_never_sees_another_namespace() {
    if !python_has("duckdb") || !python_has("deltalake") {
        return;
    }
    let f = fixture().await;
    let (ns, other) = (f.mine[0].clone(), f.other.0.clone());
    let mut queries = shapes(&ns, &other);
    let shape_count = queries.len();
    assert!(shape_count >= 40, "{shape_count} shapes");
    queries.extend(
        GRAFANA_SQL
            .iter()
            .map(|q| q.replace("$__timeFilter", TIME_FILTER)),
    );

    // Question answers of the admin token, filtered in DuckDB to the team's subjects.
    let range = "from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z&limit=10000";
    let mut questions = Vec::new();
    for q in ["drops", "talkers", "latency", "dns-errors", "retransmits"] {
        for by in ["pod", "workload"] {
            for exact in [false, true] {
                questions.push(format!(
                    "/api/v1/questions/{q}?by={by}&exact={exact}&{range}"
                ));
            }
        }
    }
    let mut admin_rows = Vec::new();
    for path in &questions {
        let (status, rows) = get_json(&f, ADMIN, "GET", path, None).await;
        assert_eq!(status, 200, "{path}: {rows}");
        admin_rows.push((
            rows,
            "SELECT * FROM admin WHERE namespace IN ($NS)".to_string(),
        ));
    }
    let (duck_all, duck_scoped, duck_admin) = duckdb(&f, &queries, &admin_rows);

    let mut compared = 0;
    let mut nonempty = 0;
    for (i, q) in queries[..shape_count].iter().enumerate() {
        let (columns, expected) = match &duck_scoped[i] {
            Ok(a) => a.clone(),
            Err(e) => panic!("DuckDB failed on {q}: {e}"),
        };
        let (status, team) = sql(&f, TEAM, q).await;
        assert_eq!(status, 200, "{q}: {team}");
        assert_eq!(object_rows(&team, &columns), expected, "team answer of {q}");
        assert!(no_foreign_flow_rows(&team, &f.mine), "{q}: {team}");
        // The reference is faithful: the admin token gets DuckDB's answer over all rows.
        let (status, admin) = sql(&f, ADMIN, q).await;
        match &duck_all[i] {
            Ok((cols, rows)) => {
                assert_eq!(status, 200, "admin {q}: {admin}");
                assert_eq!(&object_rows(&admin, cols), rows, "admin answer of {q}");
            }
            // The shape that fails on a row of another namespace fails for the admin.
            Err(_) => assert_eq!(status, 400, "admin {q}: {admin}"),
        }
        nonempty += usize::from(!expected.is_empty());
        compared += 1;
    }
    assert!(nonempty >= 35, "only {nonempty} shapes had rows to compare");
    // The scope bites: most shapes answer differently over every row.
    let differ = (0..shape_count)
        .filter(|&i| duck_all[i].as_ref().ok() != duck_scoped[i].as_ref().ok())
        .count();
    eprintln!(
        "{shape_count} SQL shapes: {nonempty} with rows, {differ} differ from the whole table"
    );
    assert!(
        differ >= 30,
        "only {differ} shapes differ from the whole table"
    );

    // The questions (from rollups and exact): the admin's rows of the team's subjects.
    for (i, path) in questions.iter().enumerate() {
        let (columns, expected) = duck_admin[i]
            .clone()
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let (status, team) = get_json(&f, TEAM, "GET", path, None).await;
        assert_eq!(status, 200, "{path}: {team}");
        assert_eq!(
            object_rows(&team, &columns),
            expected,
            "team answer of {path}"
        );
        compared += 1;
    }

    compared += per_pod(&f).await;
    compared += plans_and_schemas(&f).await;
    compared += grafana(&f, &duck_scoped[shape_count..]).await;
    assert!(compared >= 80, "{compared} requests compared");
}

/// Per-pod and per-workload questions: another namespace's subject is refused (403 with
/// the shared body); the team's own get exactly the admin's answer.
async fn per_pod(f: &Fixture) -> usize {
    let range = "from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z";
    let (ons, opod) = &f.other;
    let mut n = 0;
    for q in ["drops", "talkers", "latency", "dns-errors", "retransmits"] {
        for path in [
            format!("/api/v1/pods/{ons}/{opod}/{q}?{range}"),
            format!("/api/v1/workloads/{ons}/anything/{q}?{range}"),
        ] {
            let (status, body) = get_json(f, TEAM, "GET", &path, None).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
            n += 1;
        }
    }
    let (status, pods) = sql(
        f,
        TEAM,
        &format!("SELECT DISTINCT src_pod AS pod FROM flows WHERE src_namespace = '{}' ORDER BY 1 LIMIT 3", f.mine[0]),
    )
    .await;
    assert_eq!(status, 200);
    for pod in pods.as_array().unwrap() {
        let pod = pod["pod"].as_str().unwrap();
        for q in ["drops", "talkers", "latency"] {
            let path = format!("/api/v1/pods/{}/{pod}/{q}?{range}", f.mine[0]);
            let (s1, team) = get_json(f, TEAM, "GET", &path, None).await;
            let (s2, admin) = get_json(f, ADMIN, "GET", &path, None).await;
            assert_eq!((s1, s2), (200, 200), "{path}");
            assert_eq!(sorted(&team), sorted(&admin), "{path}");
            n += 1;
        }
    }
    // A token with no namespace reads nothing.
    let (status, none) = sql(f, NOBODY, "SELECT count(*) AS n FROM flows").await;
    assert_eq!((status, none), (200, json!([{"n": 0}])));
    n + 1
}

/// EXPLAIN ANALYZE and EXPLAIN VERBOSE are refused (their counts cover every namespace);
/// EXPLAIN names no other namespace; SHOW, DESCRIBE and information_schema show the
/// same schema as to the admin.
async fn plans_and_schemas(f: &Fixture) -> usize {
    let mut n = 0;
    for q in [
        "EXPLAIN ANALYZE SELECT * FROM flows",
        "EXPLAIN ANALYZE SELECT count(*) FROM pod_drops",
        "EXPLAIN VERBOSE SELECT count(*) FROM flows",
    ] {
        let (status, body) = sql(f, TEAM, q).await;
        assert_eq!(status, 403, "{q}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
        assert_eq!(sql(f, ADMIN, q).await.0, 200, "admin {q}");
        n += 1;
    }
    let (status, plan) = sql(
        f,
        TEAM,
        "EXPLAIN SELECT src_pod, count(*) FROM flows GROUP BY 1",
    )
    .await;
    assert_eq!(status, 200);
    let text = plan.to_string();
    assert!(
        text.contains("ScopeBarrierExec") && text.contains(&f.mine[0]),
        "{text}"
    );
    assert!(!text.contains(&f.other.0), "{text}");
    n += 1;
    for q in [
        "SELECT table_catalog, table_schema, table_name, table_type FROM information_schema.tables",
        "SELECT table_name, column_name, data_type FROM information_schema.columns",
        "SELECT table_name, definition FROM information_schema.views",
        "SHOW TABLES",
        "SHOW COLUMNS FROM flows",
        "DESCRIBE flows",
        "DESCRIBE pod_talkers",
    ] {
        let (s1, team) = sql(f, TEAM, q).await;
        let (s2, admin) = sql(f, ADMIN, q).await;
        assert_eq!((s1, s2), (200, 200), "{q}: {team}");
        // `losses` names nodes, not namespaces: only tokens that read every
        // namespace get it (docs/schema.md), so the team's catalog lacks it.
        let admin: Vec<String> = sorted(&admin)
            .into_iter()
            .filter(|row| !row.contains("\"table_name\":\"losses\""))
            .collect();
        assert_eq!(sorted(&team), admin, "{q}");
        n += 1;
    }
    // Exports of a scoped token: export_scoped.rs.
    n
}

/// Raw SQL targets of the Grafana test, and the time filter they expand to.
const GRAFANA_SQL: [&str; 2] = [
    "SELECT src_namespace AS s, dst_namespace AS d, count(*) AS n FROM flows WHERE $__timeFilter GROUP BY 1, 2",
    "SELECT namespace, count(*) AS n FROM pod_talkers WHERE $__timeFilter GROUP BY 1",
];
const TIME_FILTER: &str =
    "(interval_start >= '2026-01-01T00:00:00Z' AND interval_start < '2026-01-01T02:00:00Z')";

/// An answer's objects as sorted text, to compare two answers of the service.
fn sorted(answer: &Value) -> Vec<String> {
    let mut rows: Vec<String> = answer
        .as_array()
        .unwrap_or_else(|| panic!("not rows: {answer}"))
        .iter()
        .map(Value::to_string)
        .collect();
    rows.sort();
    rows
}

fn grafana_query(targets: Value, filters: Value) -> Value {
    json!({
        "range": {"from": "2026-01-01T00:00:00.000Z", "to": "2026-01-01T02:00:00.000Z"},
        "intervalMs": 600000, "maxDataPoints": 100, "targets": targets, "filters": filters
    })
}

/// Grafana: raw SQL targets as `/api/v1/sql`, question tables with ad-hoc filters as the
/// admin's rows of the team's subjects, variables and tag values of the team's namespaces.
async fn grafana(f: &Fixture, expected: &[DuckAnswer]) -> usize {
    let (ns, (other, opod)) = (&f.mine[0], &f.other);
    let mut n = 0;
    for (q, expected) in GRAFANA_SQL.iter().zip(expected) {
        let (columns, expected) = expected.clone().unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(!expected.is_empty(), "{q}");
        let target = json!([{"target": "sql", "refId": "A", "payload": {"sql": q}}]);
        let (status, frames) = get_json(
            f,
            TEAM,
            "POST",
            "/grafana/query",
            Some(grafana_query(target, json!([]))),
        )
        .await;
        assert_eq!(status, 200, "{frames}");
        let names: Vec<&str> = frames[0]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        assert_eq!(names, columns, "{q}");
        assert_eq!(array_rows(&frames[0]["rows"]), expected, "Grafana {q}");
        n += 1;
    }
    // Question tables with ad-hoc filters: the team's subjects only, as the admin sees them.
    for filters in [
        json!([]),
        json!([{"key": "namespace", "operator": "=", "value": other}]),
        json!([{"key": "namespace", "operator": "!=", "value": ns}]),
        json!([{"key": "pod", "operator": "=~", "value": ".*"}]),
    ] {
        for q in ["drops", "talkers"] {
            let target = json!([{"target": q, "refId": "A", "payload": {"view": "table", "limit": "10000"}}]);
            let (s1, team) = get_json(
                f,
                TEAM,
                "POST",
                "/grafana/query",
                Some(grafana_query(target.clone(), filters.clone())),
            )
            .await;
            let mut own = filters.as_array().unwrap().clone();
            own.push(json!({"key": "namespace", "operator": "=", "value": ns}));
            let (s2, admin) = get_json(
                f,
                ADMIN,
                "POST",
                "/grafana/query",
                Some(grafana_query(target, Value::Array(own))),
            )
            .await;
            assert_eq!((s1, s2), (200, 200), "{team} {admin}");
            assert_eq!(
                sorted(&team[0]["rows"]),
                sorted(&admin[0]["rows"]),
                "{q} with {filters}"
            );
            n += 1;
        }
    }
    // Time series of another namespace's pod: refused.
    let target =
        json!([{"target": "drops", "refId": "A", "payload": {"namespace": other, "pod": opod}}]);
    let (status, body) = get_json(
        f,
        TEAM,
        "POST",
        "/grafana/query",
        Some(grafana_query(target, json!([]))),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // Variables, payload options and tag values: the team's namespace and its pods.
    let range = json!({"from": "2026-01-01T00:00:00.000Z", "to": "2026-01-01T02:00:00.000Z"});
    let values = |v: &Value, key: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x[key].as_str().unwrap().to_string())
            .collect()
    };
    let (_, vars) = get_json(
        f,
        TEAM,
        "POST",
        "/grafana/variable",
        Some(json!({"payload": {"target": "namespace"}, "range": range})),
    )
    .await;
    assert_eq!(values(&vars, "__value"), [ns.as_str()]);
    let (_, vars) = get_json(
        f,
        TEAM,
        "POST",
        "/grafana/variable",
        Some(json!({"payload": {"target": "namespace", "namespace": other}, "range": range})),
    )
    .await;
    assert_eq!(values(&vars, "__value"), Vec::<String>::new());
    let (_, team_pods) = get_json(
        f,
        TEAM,
        "POST",
        "/grafana/variable",
        Some(json!({"payload": {"target": "pod"}, "range": range})),
    )
    .await;
    let (_, admin_pods) = get_json(
        f,
        ADMIN,
        "POST",
        "/grafana/variable",
        Some(json!({"payload": {"target": "pod", "namespace": ns}, "range": range})),
    )
    .await;
    assert_eq!(sorted(&team_pods), sorted(&admin_pods));
    assert!(!team_pods.as_array().unwrap().is_empty());
    assert!(!values(&team_pods, "__value").contains(opod));
    let (_, tags) = get_json(
        f,
        TEAM,
        "POST",
        "/grafana/tag-values",
        Some(json!({"key": "namespace"})),
    )
    .await;
    assert_eq!(values(&tags, "text"), [ns.as_str()]);
    let (_, opts) = get_json(
        f,
        TEAM,
        "POST",
        "/grafana/metric-payload-options",
        Some(json!({"name": "namespace", "payload": {}})),
    )
    .await;
    assert_eq!(values(&opts, "value"), [ns.as_str()]);
    n + 7
}

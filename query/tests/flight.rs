//! Arrow Flight SQL through the ADBC Flight SQL driver (PyPI `adbc-driver-flightsql`,
//! the Go driver behind Python's DB-API): the per-pod questions' SQL and ad-hoc SQL
//! return the same Arrow tables as `POST /api/v1/sql` with `format: arrow`, and counts
//! agree with the Delta table read by python `deltalake`; refused statements, deep SQL,
//! missing, wrong and scope-less tokens are refused; a namespace-scoped token sees
//! only rows of its namespaces; a timeout cancels the query and frees its slot.
//!
//! The driver runs in a child process the test waits for: the service's tasks run on
//! the runtime's worker threads meanwhile.

use std::path::Path;
use std::time::Duration;

use flowlake_query::QueryConfig;
use flowlake_query::questions::{Question, Scope as Subject, TimeRange, question_sql};
use flowlake_service::auth::TokenEntry;
use flowlake_service::{Scope, hash_token};
use serde_json::{Value, json};

use crate::support::*;

mod client;
mod tls;

use client::{Client, Outcome};

/// A service over the shared table with Flight SQL on a port of its own.
async fn start_flight(cfg: QueryConfig) -> flowlake_query::RunningQuery {
    let mut cfg = cfg;
    cfg.flight_listen = Some(([127, 0, 0, 1], 0).into());
    start(cfg).await
}

fn shared_config() -> QueryConfig {
    QueryConfig::for_tests(shared_table().to_str().unwrap())
}

/// The SQL of every per-pod question, for all pods and for one pod.
fn question_sqls(namespace: &str, pod: &str) -> Vec<String> {
    let range = TimeRange::checked(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2026-01-01T02:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for q in Question::ALL {
        out.push(question_sql(q, &Subject::AllPods, &range, &[], 50));
        let one = Subject::Pod {
            namespace: namespace.into(),
            pod: pod.into(),
        };
        out.push(question_sql(q, &one, &range, &[], 50));
    }
    out
}

const AD_HOC: [&str; 6] = [
    "SELECT 1 AS one",
    "SELECT count(*) AS n, sum(bytes) AS bytes, sum(packets) AS packets FROM flows",
    "SELECT * FROM flows ORDER BY interval_start, src_ip, src_port, dst_ip, dst_port LIMIT 2000",
    "SELECT src_namespace, protocol, count(*) AS n, avg(bytes) AS b FROM flows GROUP BY 1, 2",
    "WITH t AS (SELECT src_pod, sum(bytes) AS b FROM flows GROUP BY 1) \
     SELECT * FROM t WHERE b > 0 ORDER BY b DESC LIMIT 10",
    "SELECT * FROM flows WHERE false",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_answers_as_the_http_endpoint() {
    if !python_has("adbc_driver_flightsql") {
        return;
    }
    let svc = start_flight(shared_config()).await;
    let (_, first) = sql_json(
        &svc,
        "SELECT src_namespace AS ns, src_pod AS pod FROM flows \
         WHERE src_pod IS NOT NULL ORDER BY 1, 2 LIMIT 1",
    )
    .await;
    let (ns, pod) = (
        first[0]["ns"].as_str().unwrap(),
        first[0]["pod"].as_str().unwrap(),
    );
    let mut sqls: Vec<String> = AD_HOC.iter().map(|s| s.to_string()).collect();
    sqls.extend(question_sqls(ns, pod));
    let client = Client::new(&svc, None);
    let answers = client.compare(&sqls, Some(shared_table()));
    for (sql, a) in sqls.iter().zip(&answers) {
        assert_eq!(a["error"], Value::Null, "{sql}: {a}");
        assert_eq!(a["same_schema"], true, "{sql}: {a}");
        assert_eq!(a["same_rows"], true, "{sql}: {a}");
        assert_eq!(a["prepared_same"], true, "{sql}: {a}");
    }
    // Not all empty: the questions have answers in this workload.
    let rows: Vec<u64> = answers
        .iter()
        .map(|a| a["rows"].as_u64().unwrap())
        .collect();
    assert!(rows.iter().filter(|&&n| n > 0).count() >= 10, "{rows:?}");
    assert_eq!(rows[2], 2000);
    // The count, bytes and packets of the table, as python deltalake reads them.
    let truth = &answers[1]["truth"];
    assert_eq!(answers[1]["first_row"]["n"], truth["rows"], "{truth}");
    assert_eq!(answers[1]["first_row"]["bytes"], truth["bytes"], "{truth}");
    assert_eq!(
        answers[1]["first_row"]["packets"], truth["packets"],
        "{truth}"
    );
    assert_eq!(truth["rows"], 36_000);

    // What BI tools browse.
    let meta = client.metadata();
    assert_eq!(meta["vendor_name"], "Flowlake", "{meta}");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"), "{meta}");
    let tables: Vec<&str> = meta["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in ["flows", "pod_drops", "pod_latency", "pod_talkers"] {
        assert!(tables.contains(&t), "{t} not in {tables:?}");
    }
    assert_eq!(meta["flows_schema_same"], true, "{meta}");
    assert_eq!(
        meta["table_types"],
        json!(["LOCAL TEMPORARY", "TABLE", "VIEW"])
    );
    // Nothing is left waiting: every ticket was fetched.
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_refuses_what_the_sandbox_refuses() {
    if !python_has("adbc_driver_flightsql") {
        return;
    }
    let svc = start_flight(shared_config()).await;
    let deep = format!("SELECT 1 WHERE {}", vec!["1 = 1"; 1100].join(" AND "));
    let cases: Vec<(String, &str)> = vec![
        ("CREATE TABLE t AS SELECT 1".into(), "statement refused"),
        ("DROP TABLE flows".into(), "statement refused"),
        (
            "INSERT INTO flows SELECT * FROM flows".into(),
            "statement refused",
        ),
        (
            "COPY (SELECT 1) TO '/tmp/flowlake-flight-copy.csv'".into(),
            "statement refused",
        ),
        (
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'".into(),
            "statement refused",
        ),
        (
            "SET datafusion.execution.batch_size = 1".into(),
            "statement refused",
        ),
        ("SELECT 1; SELECT 2".into(), "statement refused"),
        (deep, "statement too complex"),
    ];
    let client = Client::new(&svc, None);
    let sqls: Vec<String> = cases.iter().map(|(s, _)| s.clone()).collect();
    let outcomes = client.run(&sqls);
    for ((sql, expected), outcome) in cases.iter().zip(outcomes) {
        match outcome {
            Outcome::Error(e) => {
                assert!(e.contains(expected), "{sql}: {e}");
                assert!(e.contains("(InvalidArgument;"), "{sql}: {e}");
            }
            Outcome::Rows(n) => panic!("{sql} was answered with {n} rows"),
        }
        // The HTTP endpoint refuses it the same way.
        let (status, body) = sql_json(&svc, sql).await;
        assert_eq!(status, 400, "{sql}: {body}");
    }
    assert!(!Path::new("/tmp/flowlake-flight-copy.csv").exists());
}

fn write_tokens(path: &Path, namespace: &str) {
    let entry = |name: &str, token: &str, scopes: Vec<Scope>, ns: Option<Vec<String>>| TokenEntry {
        name: name.into(),
        sha256: hash_token(token),
        scopes,
        namespaces: ns,
    };
    let tokens = [
        entry("reader", "reader-secret", vec![Scope::Read], None),
        entry("exporter", "exporter-secret", vec![Scope::Export], None),
        entry(
            "team",
            "team-secret",
            vec![Scope::Read],
            Some(vec![namespace.to_string()]),
        ),
    ];
    std::fs::write(path, json!({ "tokens": tokens }).to_string()).unwrap();
}

/// A namespace of the table, read over HTTP from a service without tokens.
async fn first_namespace() -> String {
    let open = start_flight(shared_config()).await;
    let (_, first) = sql_json(
        &open,
        "SELECT src_namespace AS ns FROM flows WHERE src_namespace IS NOT NULL \
         GROUP BY 1 ORDER BY 1 LIMIT 1",
    )
    .await;
    open.stop().await.unwrap();
    first[0]["ns"].as_str().unwrap().to_string()
}

/// Missing, wrong and scope-less tokens (of [`write_tokens`]) are refused with their
/// gRPC codes, the reader's is answered; `client` makes a client with a token.
fn refuses_all_but_the_reader(client: impl Fn(Option<&str>) -> Client) {
    let one = vec!["SELECT 1 AS one".to_string()];
    // The driver's error text ends with the gRPC code: `(Unauthenticated; Prepare)`.
    for (token, expected) in [
        (None, "(Unauthenticated;"),
        (Some("wrong-secret"), "(Unauthenticated;"),
        (Some("exporter-secret"), "(PermissionDenied;"),
    ] {
        match client(token).run(&one).remove(0) {
            Outcome::Error(e) => assert!(e.contains(expected), "{token:?}: {e}"),
            Outcome::Rows(n) => panic!("{token:?} was answered with {n} rows"),
        }
    }
    assert!(matches!(
        client(Some("reader-secret")).run(&one)[0],
        Outcome::Rows(1)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_needs_a_read_token_and_keeps_to_its_namespaces() {
    if !python_has("adbc_driver_flightsql") {
        return;
    }
    let ns = first_namespace().await;

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    write_tokens(&tokens, &ns);
    let mut cfg = shared_config();
    cfg.token_file = Some(tokens);
    let svc = start_flight(cfg).await;
    refuses_all_but_the_reader(|token| Client::new(&svc, token));

    // The team token: the same answer as over HTTP with the same token, every row
    // with its namespace at one end, and the counts of the Delta table filtered to it.
    let team = Client::new(&svc, Some("team-secret"));
    let sql = "SELECT src_namespace, dst_namespace, count(*) AS n, sum(bytes) AS b \
               FROM flows GROUP BY 1, 2"
        .to_string();
    let answer = team.compare_scoped(&sql, shared_table(), &ns);
    assert_eq!(answer["error"], Value::Null, "{answer}");
    assert_eq!(answer["same_rows"], true, "{answer}");
    assert_eq!(answer["only_mine"], true, "{answer}");
    assert_eq!(answer["n"], answer["truth_n"], "{answer}");
    assert_eq!(answer["b"], answer["truth_b"], "{answer}");
    assert!(answer["truth_n"].as_u64().unwrap() < 36_000, "{answer}");
    // The catalog calls need the token too.
    let meta = Client::new(&svc, None).metadata_error();
    assert!(meta.contains("(Unauthenticated;"), "{meta}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_timeout_cancels_the_query() {
    if !python_has("adbc_driver_flightsql") {
        return;
    }
    let mut cfg = shared_config();
    cfg.limits.timeout = Duration::from_secs(1);
    cfg.limits.max_concurrent = 1;
    let svc = start_flight(cfg).await;
    let client = Client::new(&svc, None);
    let sqls = vec![
        "SELECT count(*) AS n FROM flows a, flows b".to_string(),
        // Runs only once the slot of the first is free again.
        "SELECT count(*) AS n FROM flows".to_string(),
    ];
    let outcomes = client.run(&sqls);
    match &outcomes[0] {
        Outcome::Error(e) => {
            assert!(e.contains("time limit"), "{e}");
            assert!(e.contains("(DeadlineExceeded;"), "{e}");
        }
        Outcome::Rows(n) => panic!("the cross join returned {n} rows within 1s"),
    }
    assert!(matches!(outcomes[1], Outcome::Rows(1)), "{:?}", outcomes[1]);
    let running = svc
        .state()
        .engine
        .exec()
        .permit(tokio::time::Instant::now() + Duration::from_secs(5))
        .await;
    assert!(running.is_ok(), "the timed-out query still holds its slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_keeps_the_row_limit_of_http() {
    if !python_has("adbc_driver_flightsql") {
        return;
    }
    let mut cfg = shared_config();
    cfg.limits.max_rows = 100;
    let svc = start_flight(cfg).await;
    let sqls = vec![
        "SELECT * FROM flows".to_string(),
        "SELECT * FROM flows LIMIT 100".to_string(),
    ];
    let outcomes = Client::new(&svc, None).run(&sqls);
    match &outcomes[0] {
        Outcome::Error(e) => {
            assert!(e.contains("row limit of 100 rows"), "{e}");
            assert!(e.contains("(ResourceExhausted;"), "{e}");
        }
        Outcome::Rows(n) => panic!("{n} rows past the row limit of 100"),
    }
    assert!(
        matches!(outcomes[1], Outcome::Rows(100)),
        "{:?}",
        outcomes[1]
    );
    // The HTTP endpoint refuses the same statement with the same limit.
    let (status, body) = sql_json(&svc, &sqls[0]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "row_limit_exceeded", "{body}");
}

//! Hourly rollups: the questions answered from rollups (whole hours) plus flow rows
//! (the rest) equal the answers from the flow rows alone, late data makes an hour's
//! rollup stale until it is rebuilt, and stale rollups are deleted after their grace.

use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use flowlake_query::access::Access;
use flowlake_query::metrics::{KindLabel, QueryMetrics};
use flowlake_query::questions::{Question, QuestionRequest, Scope, TimeRange};
use flowlake_query::rollup::build::{BuildReport, RollupPolicy, build_rollups};
use flowlake_query::rollup::sketch::RELATIVE_ACCURACY;
use flowlake_query::rollup::{Fingerprint, RollupPath};
use flowlake_query::{QueryConfig, QueryEngine};
use serde_json::{Map, Value};

use crate::support::{append, gen_records, write_gen_table};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn rows(batches: &[RecordBatch]) -> Vec<Map<String, Value>> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&bytes).unwrap()
}

/// Equal, except latency quantiles: within the sketch's relative accuracy.
fn assert_same(what: &str, exact: &[Map<String, Value>], rolled: &[Map<String, Value>]) {
    assert_eq!(exact.len(), rolled.len(), "{what}: row count");
    for (e, r) in exact.iter().zip(rolled) {
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            r.keys().collect::<Vec<_>>(),
            "{what}"
        );
        for (k, ev) in e {
            let rv = &r[k];
            if k.ends_with("_us") && k.contains("_p") {
                let (a, b) = (ev.as_f64().unwrap(), rv.as_f64().unwrap());
                assert!(
                    (a - b).abs() <= RELATIVE_ACCURACY * a.abs() + 1e-9,
                    "{what}: {k} exact {a}, rolled up {b}"
                );
            } else {
                assert_eq!(ev, rv, "{what}: {k} in {e:?} vs {r:?}");
            }
        }
    }
}

/// Latency rows ranked by a quantile can swap places within the accuracy: compare
/// them by subject.
fn by_subject(mut rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    let key = |r: &Map<String, Value>| {
        format!(
            "{:?}/{:?}/{:?}",
            r.get("namespace"),
            r.get("pod"),
            r.get("workload")
        )
    };
    rows.sort_by_key(key);
    rows
}

async fn answers(
    engine: &QueryEngine,
    q: Question,
    scope: &Scope,
    range: &TimeRange,
    exact: bool,
) -> (String, Vec<Map<String, Value>>) {
    let request = QuestionRequest {
        exact,
        ..QuestionRequest::new(q, scope.clone(), *range, 1000)
    };
    answer(engine, &request).await
}

/// The SQL the engine picks for a request, and its rows (latency rows by subject).
async fn answer(
    engine: &QueryEngine,
    request: &QuestionRequest,
) -> (String, Vec<Map<String, Value>>) {
    let sql = engine.question_sql(request, &Access::all()).await.unwrap();
    let batches = engine
        .run(&sql, "test", true, &Access::all())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = rows(&batches);
    if request.question == Question::Latency {
        out = by_subject(out);
    }
    (sql, out)
}

async fn compare_all(engine: &QueryEngine, range: &TimeRange, scopes: &[Scope]) -> usize {
    let mut rolled_up = 0;
    for q in Question::ALL {
        let mut compared = 0;
        for scope in scopes {
            let what = format!("{} {scope:?} {range:?}", q.name());
            let (_, exact) = answers(engine, q, scope, range, true).await;
            let (sql, rolled) = answers(engine, q, scope, range, false).await;
            rolled_up += usize::from(sql.contains("flowlake_rollup("));
            assert_same(&what, &exact, &rolled);
            compared += exact.len();
        }
        assert!(compared > 0, "{}: no rows to compare", q.name());
    }
    rolled_up
}

/// The gen workload as a table in a temporary directory (`flows` in it), and an engine.
async fn gen_table_engine() -> (tempfile::TempDir, QueryEngine) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows");
    write_gen_table(&path).await;
    let config = QueryConfig::for_tests(path.to_str().unwrap());
    let engine = QueryEngine::open(&config.engine(), QueryMetrics::unregistered())
        .await
        .unwrap();
    (dir, engine)
}

#[tokio::test]
async fn rollups_answer_like_the_flow_rows_and_follow_late_data() {
    let (dir, engine) = gen_table_engine().await;
    let path = dir.path().join("flows");
    let whole = TimeRange {
        from: t("2026-01-01T00:00:00Z"),
        to: t("2026-01-01T02:00:00Z"),
    };
    let request = QuestionRequest::new(Question::Drops, Scope::AllPods, whole, 10);
    let sql = engine.question_sql(&request, &Access::all()).await.unwrap();
    assert!(!sql.contains("flowlake_rollup"), "no rollups yet: {sql}");

    // A pod and a workload with drops, for the scoped questions.
    let top = engine
        .run("SELECT namespace, pod, workload FROM pod_drops GROUP BY 1, 2, 3 ORDER BY sum(packets) DESC, 1, 2, 3 LIMIT 1", "test", false, &Access::all())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let top = &rows(&top)[0];
    let text = |k: &str| top[k].as_str().unwrap().to_string();
    let scopes = [
        Scope::AllPods,
        Scope::AllWorkloads,
        Scope::Pod {
            namespace: text("namespace"),
            pod: text("pod"),
        },
        Scope::Workload {
            namespace: text("namespace"),
            workload: text("workload"),
        },
    ];

    // Hours still open are not rolled up.
    let policy = RollupPolicy::default();
    let open = build_rollups(&engine, t("2026-01-01T01:30:00Z"), policy)
        .await
        .unwrap();
    assert_eq!(
        open,
        BuildReport {
            built: 5,
            open_hours: 1,
            ..Default::default()
        }
    );
    let report = build_rollups(&engine, Utc::now(), policy).await.unwrap();
    assert_eq!(
        report,
        BuildReport {
            built: 5,
            current: 5,
            ..Default::default()
        }
    );
    let again = build_rollups(&engine, Utc::now(), policy).await.unwrap();
    assert_eq!(
        again,
        BuildReport {
            current: 10,
            ..Default::default()
        }
    );

    // Whole hours from rollups; a range starting mid-hour reads that part from the rows.
    let partial = TimeRange {
        from: t("2026-01-01T00:30:00Z"),
        to: whole.to,
    };
    assert_eq!(compare_all(&engine, &whole, &scopes).await, 20);
    assert_eq!(compare_all(&engine, &partial, &scopes).await, 20);
    // Conditions on subject columns (Grafana's ad-hoc filters) keep using rollups.
    for q in Question::ALL {
        let request = |exact| QuestionRequest {
            exact,
            subject_filters: vec![
                format!("namespace = '{}'", text("namespace")),
                "pod <> 'x'".into(),
            ],
            ..QuestionRequest::new(q, Scope::AllPods, partial, 1000)
        };
        let mut got = Vec::new();
        for exact in [true, false] {
            let (sql, rows) = answer(&engine, &request(exact)).await;
            assert_eq!(sql.contains("flowlake_rollup("), !exact, "{sql}");
            got.push(rows);
        }
        assert_same(
            &format!("{} with subject filters", q.name()),
            &got[0],
            &got[1],
        );
    }
    let (sql, _) = answers(&engine, Question::Talkers, &Scope::AllPods, &partial, false).await;
    assert!(
        sql.contains("date=2026-01-01/hour=01") && !sql.contains("hour=00"),
        "{sql}"
    );
    assert!(
        sql.contains("interval_start >= '2026-01-01T00:30:00.000000Z'"),
        "{sql}"
    );

    // Late rows for hour 1: its rollups are stale, so hour 1 is read from the rows.
    let late: Vec<_> = gen_records()
        .into_iter()
        .filter(|r| r.interval_start >= t("2026-01-01T01:00:00Z"))
        .take(2000)
        .collect();
    append(&path, &late).await;
    let (sql, _) = answers(&engine, Question::Drops, &Scope::AllPods, &whole, false).await;
    assert!(sql.contains("hour=00") && !sql.contains("hour=01"), "{sql}");
    assert!(
        sql.contains("interval_start >= '2026-01-01T01:00:00.000000Z'"),
        "{sql}"
    );
    assert_eq!(compare_all(&engine, &whole, &scopes).await, 20);

    let rebuilt = build_rollups(&engine, Utc::now(), policy).await.unwrap();
    assert_eq!(
        rebuilt,
        BuildReport {
            built: 5,
            current: 5,
            ..Default::default()
        },
        "stale ones kept for running queries"
    );
    assert_eq!(compare_all(&engine, &whole, &scopes).await, 20);
    let later = Utc::now()
        + chrono::Duration::from_std(policy.keep_stale + Duration::from_secs(60)).unwrap();
    let cleaned = build_rollups(&engine, later, policy).await.unwrap();
    assert_eq!(
        cleaned,
        BuildReport {
            current: 10,
            deleted: 5,
            ..Default::default()
        }
    );
    let listed = std::fs::read_dir(path.join("_flowlake_rollups/v1/drops/date=2026-01-01/hour=01"))
        .unwrap()
        .count();
    assert_eq!(listed, 1, "one current rollup left for the hour");

    let m = engine.metrics();
    use prometheus_client::metrics::{counter::Counter, family::Family};
    let count = |f: &Family<KindLabel, Counter>, kind| f.get_or_create(&KindLabel { kind }).get();
    assert_eq!(count(&m.rollup_files, "built"), 15);
    assert_eq!(count(&m.rollup_files, "deleted"), 5);
    assert_eq!(count(&m.rollup_passes, "ok"), 5);
    assert!(count(&m.question_hours, "rollup") > 0);
    assert!(count(&m.question_hours, "rows") > 0);
}

#[tokio::test]
async fn endpoints_use_rollups_unless_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows");
    write_gen_table(&path).await;
    let svc = crate::support::start(QueryConfig::for_tests(path.to_str().unwrap())).await;
    let engine = &svc.state().engine;
    build_rollups(engine, Utc::now(), RollupPolicy::default())
        .await
        .unwrap();
    let range = "from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z";
    let get = |q: &str| {
        let u = crate::support::url(&svc, q);
        async move {
            let resp = reqwest::get(u).await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            serde_json::from_slice::<Vec<Map<String, Value>>>(&resp.bytes().await.unwrap()).unwrap()
        }
    };
    let rolled = by_subject(get(&format!("/api/v1/questions/latency?{range}")).await);
    let exact = by_subject(get(&format!("/api/v1/questions/latency?{range}&exact=true")).await);
    assert_same("latency endpoint", &exact, &rolled);
    let drops = get(&format!("/api/v1/questions/drops?{range}")).await;
    let exact_drops = get(&format!("/api/v1/questions/drops?{range}&exact=true")).await;
    assert_eq!(drops, exact_drops);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn a_rollup_another_replica_wrote_first_is_kept() {
    let (dir, engine) = gen_table_engine().await;
    let path = dir.path().join("flows");
    let store = engine.rollups().unwrap();
    let rollup = RollupPath {
        question: Question::Drops,
        partition: "date=2026-01-01/hour=00".parse().unwrap(),
        fingerprint: Fingerprint(7),
    };
    store.put(rollup, b"first".to_vec()).await.unwrap();
    store.put(rollup, b"second, longer".to_vec()).await.unwrap();
    let on_disk = std::fs::read(path.join(rollup.object_path().as_ref())).unwrap();
    assert_eq!(on_disk, b"first");
    assert_eq!(store.meta(&rollup).unwrap().size, 5);
}

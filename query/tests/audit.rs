//! The audit line carries the SQL of `/api/v1/sql`, of Grafana `sql` targets and of
//! export requests alike (here as text, `--audit-sql text`).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use flowlake_query::QueryConfig;
use flowlake_service::AuditSql;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, span};

use crate::support::*;

/// The fields of every `flowlake::audit` event, one string per event.
#[derive(Clone, Default)]
struct AuditLines(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for AuditLines {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "flowlake::audit"
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

// Ignored in the parallel run: its thread-local subscriber sees no audit event
// while limits:: or export:: tests run beside it (cause not found yet).
// scripts/test.sh runs it alone after the rest.
#[ignore = "run alone by scripts/test.sh: misses events beside limits::/export::"]
#[tokio::test]
async fn grafana_and_export_sql_are_in_the_audit_line() {
    let lines = AuditLines::default();
    // The test's runtime runs on this thread, the service's HTTP side included.
    let _guard = tracing::subscriber::set_default(lines.clone());
    let exports = tempfile::tempdir().unwrap();
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.audit_sql = AuditSql::Text;
    cfg.export.roots = vec![exports.path().to_str().unwrap().to_string()];
    let svc = start(cfg).await;
    let base = format!("http://{}", svc.addr());
    let range = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z"});
    for (path, body) in [
        ("/api/v1/sql", json!({"sql": "SELECT 41 AS via_sql"})),
        (
            "/grafana/query",
            json!({"range": range, "targets": [
                {"refId": "A", "target": "sql", "payload": {"sql": "SELECT 42 AS via_grafana"}}]}),
        ),
        (
            "/api/v1/export",
            json!({"sql": "SELECT 43 AS via_export", "destination": exports.path().join("out")}),
        ),
    ] {
        let (status, text) = post_json(&format!("{base}{path}"), &body).await;
        assert!(status < 300, "{path}: {status} {text}");
    }
    let wanted = [
        ("/api/v1/sql", "SELECT 41 AS via_sql"),
        ("/grafana/query", "SELECT 42 AS via_grafana"),
        ("/api/v1/export", "SELECT 43 AS via_export"),
    ];
    let found = |lines: &[String], (path, sql): (&str, &str)| {
        lines
            .iter()
            .any(|l| l.contains(&format!("path={path}")) && l.contains(sql))
    };
    // Each line is written when its response body ends, in the connection's task.
    for _ in 0..100 {
        let now = lines.0.lock().unwrap().clone();
        if wanted.iter().all(|w| found(&now, *w)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let lines = lines.0.lock().unwrap().clone();
    for w in wanted {
        assert!(found(&lines, w), "no audit line of {w:?} in {lines:#?}");
    }
    svc.stop().await.unwrap();
}

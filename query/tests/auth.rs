//! Authentication on every route: without a token, with a wrong one, with one removed
//! from the token file (no restart), and with one lacking the route's scope, every
//! route answers 401/403 with the shared error body; health and readiness stay open.

use std::path::Path;
use std::time::Duration;

use flowlake_query::QueryConfig;
use flowlake_service::auth::TokenEntry;
use flowlake_service::{Scope, hash_token};
use serde_json::{Value, json};

use crate::support::*;

fn write_tokens(path: &Path, tokens: &[(&str, &str, Scope)]) {
    let entries: Vec<TokenEntry> = tokens
        .iter()
        .map(|(name, token, scope)| TokenEntry {
            name: name.to_string(),
            sha256: hash_token(token),
            scopes: vec![*scope],
            namespaces: None,
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({ "tokens": entries }).to_string()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// Every route with a request it accepts and the scope it needs.
fn routes(export_to: &Path) -> Vec<(&'static str, &'static str, Option<Value>, Scope)> {
    let range = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z"});
    let grafana = |path: &'static str, body: Value| ("POST", path, Some(body), Scope::Read);
    vec![
        (
            "POST",
            "/api/v1/sql",
            Some(json!({"sql": "SELECT 1 AS one"})),
            Scope::Read,
        ),
        ("GET", "/api/v1/openapi.json", None, Scope::Read),
        ("GET", "/api/v1/questions", None, Scope::Read),
        ("GET", "/api/v1/questions/drops", None, Scope::Read),
        ("GET", "/api/v1/pods/ns/pod/drops", None, Scope::Read),
        ("GET", "/api/v1/workloads/ns/w/talkers", None, Scope::Read),
        ("GET", "/grafana", None, Scope::Read),
        ("GET", "/grafana/", None, Scope::Read),
        grafana("/grafana/metrics", json!({})),
        grafana(
            "/grafana/metric-payload-options",
            json!({"name": "namespace", "payload": {}}),
        ),
        grafana("/grafana/query", json!({"range": range, "targets": []})),
        grafana(
            "/grafana/variable",
            json!({"payload": {"target": "namespace"}}),
        ),
        grafana("/grafana/tag-keys", json!({})),
        grafana("/grafana/tag-values", json!({"key": "namespace"})),
        (
            "POST",
            "/api/v1/export",
            Some(json!({"destination": export_to, "sql": "SELECT 1 AS one"})),
            Scope::Export,
        ),
        ("GET", "/api/v1/export/some-id", None, Scope::Export),
        ("GET", "/metrics", None, Scope::Admin),
    ]
}

#[tokio::test]
async fn every_route_needs_a_token_with_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    let all = [
        ("reader", "reader-secret", Scope::Read),
        ("exporter", "exporter-secret", Scope::Export),
        ("admin", "admin-secret", Scope::Admin),
        ("leaver", "leaver-secret", Scope::Admin),
    ];
    write_tokens(&tokens, &all);
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.token_file = Some(tokens.clone());
    cfg.export.roots = vec![dir.path().to_str().unwrap().to_string()];
    let export_to = dir.path().join("export");
    let svc = start(cfg).await;
    let base = format!("http://{}", svc.addr());

    // Open: health and readiness.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            request(&base, "GET", path, &None, None).await.0,
            200,
            "{path}"
        );
    }
    // The removed token works until the file drops it.
    assert_eq!(
        request(
            &base,
            "GET",
            "/api/v1/questions",
            &None,
            Some("leaver-secret")
        )
        .await
        .0,
        200
    );
    write_tokens(&tokens, &all[..3]);
    // The file is looked at again at most every second.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut checked = 0;
    for (method, path, body, scope) in routes(&export_to) {
        let lacking = match scope {
            Scope::Read => "exporter-secret",
            _ => "reader-secret",
        };
        for (case, token, status) in [
            ("no token", None, 401),
            ("wrong token", Some("not-a-token"), 401),
            ("removed token", Some("leaver-secret"), 401),
            ("token without the scope", Some(lacking), 403),
        ] {
            let (got, text) = request(&base, method, path, &body, token).await;
            assert_eq!(got, status, "{method} {path} with {case}: {text}");
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
            let err = &v["error"];
            assert!(
                err["code"].is_string() && err["message"].is_string() && err["retryable"] == false,
                "{path} {case}: {text}"
            );
            checked += 1;
        }
        // The admin token passes authentication on every route.
        let (got, text) = request(&base, method, path, &body, Some("admin-secret")).await;
        assert!(
            got != 401 && got != 403,
            "{method} {path} as admin: {got} {text}"
        );
    }
    assert_eq!(checked, routes(&export_to).len() * 4);
    svc.stop().await.unwrap();
}

//! Tokens on the ingester: every route × {no token, wrong token, removed token,
//! token without the scope} is refused with 401/403 in the shared error body, health
//! routes stay open, and a token added or removed in the file counts without a restart.

use flowlake_ingester::{Ingester, routes};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// Sends `method path` with `token`; the status and the parsed JSON body (if any).
async fn call(
    addr: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Option<Value>, Option<String>) {
    let mut req = client()
        .request(method, format!("http://{addr}{path}"))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).ok(), challenge)
}

/// The shared error body with `code`.
fn assert_error(body: &Option<Value>, code: &str, what: &str) {
    let body = body
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no JSON body"));
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    assert_eq!(body["error"]["retryable"], false, "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_missing_wrong_removed_and_unscoped_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let file = token_file(
        dir.path(),
        &[
            ("collector", "ingest-s3cret", &["ingest"]),
            ("grafana", "read-s3cret", &["read"]),
            ("leaver", "leaver-s3cret", &["ingest", "admin"]),
        ],
    );
    cfg.token_file = Some(file);
    cfg.reload_every = std::time::Duration::ZERO;
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let addr = ing.addr();
    let batch = ipc(&flows(100, 1));

    // The leaver's token works until it is removed from the file.
    let (s, _, _) = call(
        addr,
        reqwest::Method::POST,
        routes::FLOWS,
        Some("leaver-s3cret"),
        batch.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    token_file(
        dir.path(),
        &[
            ("collector", "ingest-s3cret", &["ingest"]),
            ("grafana", "read-s3cret", &["read"]),
        ],
    );

    // (route, method, the scope's own token)
    let protected = [
        (routes::FLOWS, reqwest::Method::POST, "ingest-s3cret"),
        (routes::METRICS, reqwest::Method::GET, ADMIN_TOKEN),
    ];
    for (path, method, _) in &protected {
        for (token, what) in [
            (None, "no token"),
            (Some("wrong"), "a wrong token"),
            (Some("leaver-s3cret"), "a removed token"),
        ] {
            let (s, body, challenge) = call(addr, method.clone(), path, token, batch.clone()).await;
            let what = format!("{method} {path} with {what}");
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}");
            assert_error(&body, "unauthorized", &what);
            assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{what}");
        }
        // A known token without the scope: `read` has neither `ingest` nor `admin`.
        let (s, body, _) = call(
            addr,
            method.clone(),
            path,
            Some("read-s3cret"),
            batch.clone(),
        )
        .await;
        let what = format!("{method} {path} without the scope");
        assert_eq!(s, StatusCode::FORBIDDEN, "{what}");
        assert_error(&body, "forbidden", &what);
    }
    // The collector's token cannot read the metrics.
    let (s, body, _) = call(
        addr,
        reqwest::Method::GET,
        routes::METRICS,
        Some("ingest-s3cret"),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&body, "forbidden", "metrics with an ingest token");

    // Health is open.
    for path in [routes::HEALTHZ, routes::READYZ] {
        let (s, _, _) = call(addr, reqwest::Method::GET, path, None, vec![]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    // Each scope's own token is served, and the refusals are counted.
    for (path, method, token) in &protected {
        let (s, _, _) = call(addr, method.clone(), path, Some(token), batch.clone()).await;
        assert_eq!(s, StatusCode::OK, "{method} {path}");
    }
    let text = metrics(addr).await;
    for reason in ["unauthorized", "forbidden"] {
        assert!(
            text.contains(&format!(
                "flowlake_ingester_batches_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {text}"
        );
    }
    // Only the two accepted batches are stored.
    wait_for_rows(&cfg, 200).await;
    ing.shutdown().await.unwrap();
    assert_eq!(table_rows(&cfg).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.token_file = Some(dir.path().join("absent.json"));
    let err = Ingester::start(cfg)
        .await
        .err()
        .expect("started without its token file");
    assert!(err.to_string().contains("absent.json"), "{err}");
}

/// One audit line per request with the token's name, the route, the rows and bytes
/// taken in, and the outcome. (A current-thread runtime: the server's tasks log on
/// this thread, to this test's subscriber.)
#[tokio::test]
async fn one_audit_line_per_request() {
    let captured = flowlake_testkit::LogCapture::default();
    let _guard = captured.set_default();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.token_file = Some(token_file(
        dir.path(),
        &[("node-a", "ingest-s3cret", &["ingest"])],
    ));
    let ing = Ingester::start(cfg.clone()).await.unwrap();
    let addr = ing.addr();
    let body = ipc(&flows(120, 1));
    let body_len = body.len();
    let (s, _, _) = call(
        addr,
        reqwest::Method::POST,
        routes::FLOWS,
        None,
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(
        addr,
        reqwest::Method::POST,
        routes::FLOWS,
        Some("ingest-s3cret"),
        body,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A line is written when the server drops the answer's body.
    for _ in 0..1000 {
        if captured.lines_with("flowlake::audit").len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let lines = captured.lines_with("flowlake::audit");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for field in [
        "token=-",
        "path=/api/v1/flows",
        "status=401",
        "outcome=unauthorized",
    ] {
        assert!(lines[0].contains(field), "{field} missing: {}", lines[0]);
    }
    let bytes_in = format!("bytes_in={body_len}");
    for field in [
        "token=node-a",
        "method=POST",
        "path=/api/v1/flows",
        "status=200",
        "outcome=ok",
        "rows=120",
        bytes_in.as_str(),
        "duration_ms=",
    ] {
        assert!(lines[1].contains(field), "{field} missing: {}", lines[1]);
    }
    ing.shutdown().await.unwrap();
}

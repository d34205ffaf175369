//! The capture routes on a running ingester with tokens: collectors (scope
//! `ingest`) read the active requests of their node, report their status,
//! store their network snapshot and upload a file; other scopes and no token are refused; what is stored is
//! read back from the table's directory.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use flowlake_ingester::Ingester;
use flowlake_ingester::capture::{CaptureRequest, NodeStatus};
use reqwest::StatusCode;

use crate::common::*;

const COLLECTOR: &str = "collector-s3cret";
const READER: &str = "read-s3cret";

fn request(id: &str, nodes: &[&str], created: &str, cancelled: bool) -> CaptureRequest {
    CaptureRequest {
        id: id.into(),
        namespace: "shop".into(),
        selector: "app=web".into(),
        pods: Vec::new(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        filter: "tcp port 80".into(),
        duration_secs: 60,
        max_bytes: 1_000_000,
        max_packets: 1000,
        snaplen: 262_144,
        requested_by: "alice".into(),
        created: created.into(),
        cancelled,
    }
}

/// Writes a request where the query service stores it.
fn store_request(table: &std::path::Path, r: &CaptureRequest) {
    let dir = table.join("_captures").join(&r.id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("request.json"), serde_json::to_vec(r).unwrap()).unwrap();
}

fn status(node: &str) -> NodeStatus {
    NodeStatus {
        node: node.into(),
        state: "running".into(),
        packets: 12,
        bytes: 3400,
        lost: 1,
        interfaces: Vec::new(),
        error: String::new(),
        updated: "2026-12-07T01:00:05Z".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_read_their_active_requests_report_status_and_upload() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.token_file = Some(token_file(
        dir.path(),
        &[
            ("collector", COLLECTOR, &["ingest"]),
            ("grafana", READER, &["read"]),
        ],
    ));
    let now: DateTime<Utc> = "2026-12-07T01:00:20Z".parse().unwrap();
    let clock: flowlake_ingester::Clock = Arc::new(move || now);
    let ing = Ingester::start_with(cfg, Default::default(), clock)
        .await
        .unwrap();
    let table = dir.path().join("table");
    let t0 = "2026-12-07T01:00:00Z";
    store_request(&table, &request("all-nodes", &[], t0, false));
    store_request(&table, &request("node-b-only", &["node-b"], t0, false));
    store_request(&table, &request("both", &["node-a", "node-b"], t0, false));
    store_request(&table, &request("cancelled", &[], t0, true));
    // Ended at 00:59, past the grace at 01:00:20.
    store_request(&table, &request("over", &[], "2026-12-07T00:58:00Z", false));
    let base = format!("http://{}", ing.addr());
    let c = client();

    let active = |node: &'static str, token: Option<&'static str>| {
        let mut req = c.get(format!("{base}/api/v1/captures/requests?node={node}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let resp = active("node-a", Some(COLLECTOR)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got: Vec<CaptureRequest> = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["all-nodes", "both"]);
    assert_eq!(got[0], request("all-nodes", &[], t0, false));
    let resp = active("node-b", Some(COLLECTOR)).await.unwrap();
    let got: Vec<CaptureRequest> = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["all-nodes", "both", "node-b-only"]);
    assert_eq!(
        active("node-a", None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        active("node-a", Some(READER)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    // Status of a node's part, stored beside the request.
    let put = |id: &str, node: &str, s: &NodeStatus, token: &'static str| {
        c.put(format!("{base}/api/v1/captures/{id}/nodes/{node}/status"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(s).unwrap())
            .send()
    };
    let s = status("node-a");
    let resp = put("both", "node-a", &s, COLLECTOR).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let stored = std::fs::read(table.join("_captures/both/node-a.status.json")).unwrap();
    assert_eq!(serde_json::from_slice::<NodeStatus>(&stored).unwrap(), s);
    let resp = put("missing", "node-a", &s, COLLECTOR).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        put("both", "node-b", &s, COLLECTOR).await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "the body names another node"
    );
    assert_eq!(
        put("both", "node-a", &s, READER).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert!(!table.join("_captures/missing").exists());

    // The node's network snapshot, stored next to its file.
    let snap = |id: &str, token: &'static str| {
        c.put(format!("{base}/api/v1/captures/{id}/nodes/node-a/snapshot"))
            .bearer_auth(token)
            .body("### ip route\n10.0.0.7 dev veth7\n")
            .send()
    };
    assert_eq!(
        snap("both", COLLECTOR).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        std::fs::read_to_string(table.join("_captures/both/node-a.snapshot.txt")).unwrap(),
        "### ip route\n10.0.0.7 dev veth7\n"
    );
    assert_eq!(
        snap("missing", COLLECTOR).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        snap("both", READER).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    // An upload through the same router, with the collector's token.
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let crc = crc32c::crc32c(&data);
    let resp = c
        .put(format!("{base}/api/v1/captures/both/files/node-a?offset=0"))
        .bearer_auth(COLLECTOR)
        .header("flowlake-crc32c", format!("{crc:08x}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let description = serde_json::json!({
        "size": data.len(), "crc32c": crc, "filter": "tcp port 80", "requested_by": "alice",
        "stop_reason": "duration", "interfaces": [],
    });
    let resp = c
        .post(format!("{base}/api/v1/captures/both/files/node-a/complete"))
        .bearer_auth(COLLECTOR)
        .header("content-type", "application/json")
        .body(description.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        std::fs::read(table.join("_captures/both/node-a.pcapng")).unwrap(),
        data
    );
    let resp = c
        .put(format!("{base}/api/v1/captures/both/files/node-b?offset=0"))
        .bearer_auth(READER)
        .header("flowlake-crc32c", format!("{crc:08x}"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!table.join("_captures/both/node-b.pcapng.parts").exists());
    ing.shutdown().await.unwrap();
}

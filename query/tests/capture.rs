//! The capture API on a running query service over a real Delta table and its
//! directory: create (with every bad input refused), status with the flows the
//! capture saw, download (merged and one flow's packets, read back by tshark
//! with the equivalent filter), the `captures` SQL table, flow → capture lookup,
//! namespace-scoped tokens, delete and retention. The node files are written
//! where the ingester stores them (`_captures/<id>/…`), as pcapng by the
//! collector's writer.

use std::net::IpAddr;
use std::path::Path;

use flowlake_query::QueryConfig;
use flowlake_schemas::capture::pcapng::{Direction, InterfaceInfo, Writer};
use flowlake_schemas::capture::{FileDescription, InterfaceRow, NodeStatus};
use flowlake_schemas::{FlowRecord, Protocol};
use flowlake_service::hash_token;
use serde_json::{Value, json};

use crate::support::{append, gen_records, start, url};

const OPS: &str = "ops-s3cret";
const TEAM: &str = "team-s3cret";
const OTHER: &str = "other-s3cret";

fn tokens(dir: &Path, team_ns: &str) -> std::path::PathBuf {
    let entry = |name: &str, token: &str, ns: Option<Vec<&str>>| json!({"name": name, "sha256": hash_token(token), "scopes": ["capture", "read"], "namespaces": ns});
    let file = dir.join("tokens.json");
    let body = json!({"tokens": [
        entry("ops", OPS, None),
        entry("team", TEAM, Some(vec![team_ns])),
        entry("other", OTHER, Some(vec!["elsewhere"])),
    ]});
    std::fs::write(&file, body.to_string()).unwrap();
    file
}

/// An Ethernet/IPv4 frame of `proto` between two ends, `payload` bytes after the ports.
fn frame(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16), payload: usize) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.0, dst.0) else {
        panic!("IPv4 only")
    };
    let l4 = if proto == 6 { 20 } else { 8 };
    let total = (20 + l4 + payload) as u16;
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ]);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&d.octets());
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    if proto == 6 {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&[0, (8 + payload) as u8, 0, 0]);
    }
    f.extend(std::iter::repeat_n(0xab, payload));
    f
}

fn pcapng(id: &str, node: &str, pod: &str, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer::new(
        Vec::new(),
        &[format!("flowlake capture {id} on node {node}")],
    )
    .unwrap();
    let i = w
        .interface(&InterfaceInfo {
            name: format!("{pod}@{node}"),
            description: format!("pod={pod} node={node}"),
            snaplen: 262_144,
        })
        .unwrap();
    for (n, f) in frames.iter().enumerate() {
        let ts = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64 + n as u64;
        w.packet(i, ts, f.len() as u32, f, Direction::Inbound)
            .unwrap();
    }
    w.into_inner()
}

/// What the ingester stores when a node's upload completes, and the node's status.
fn store_node(table: &Path, id: &str, node: &str, data: &[u8], rows: Vec<InterfaceRow>) {
    let dir = table.join("_captures").join(id);
    std::fs::write(dir.join(format!("{node}.pcapng")), data).unwrap();
    let d = FileDescription {
        size: data.len() as u64,
        crc32c: 0,
        filter: "tcp or udp".into(),
        requested_by: "team".into(),
        stop_reason: "duration".into(),
        interfaces: rows.clone(),
        object_path: format!("_captures/{id}/{node}.pcapng"),
    };
    std::fs::write(
        dir.join(format!("{node}.json")),
        serde_json::to_vec(&d).unwrap(),
    )
    .unwrap();
    let s = NodeStatus {
        node: node.into(),
        state: "done".into(),
        packets: rows.iter().map(|r| r.packets).sum(),
        bytes: rows.iter().map(|r| r.bytes).sum(),
        lost: 0,
        interfaces: rows,
        error: String::new(),
        updated: chrono::Utc::now().to_rfc3339(),
    };
    std::fs::write(
        dir.join(format!("{node}.status.json")),
        serde_json::to_vec(&s).unwrap(),
    )
    .unwrap();
}

fn row(ns: &str, pod: &str, packets: u64) -> InterfaceRow {
    let now = chrono::Utc::now();
    InterfaceRow {
        namespace: ns.into(),
        pod: pod.into(),
        interface: format!("veth-{pod}"),
        start: (now - chrono::Duration::minutes(20)).to_rfc3339(),
        end: now.to_rfc3339(),
        packets,
        bytes: packets * 100,
        lost: 0,
    }
}

/// Packets tshark reads from `file` with display filter `filter` (all when empty).
fn tshark_count(file: &Path, filter: &str) -> Option<usize> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-e", "frame.number"]);
    if !filter.is_empty() {
        cmd.args(["-Y", filter]);
    }
    let out = cmd.output().ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).lines().count())
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

/// A recent TCP flow between two pods of one namespace, from the gen workload.
fn recent_records() -> (Vec<FlowRecord>, FlowRecord) {
    let mut records: Vec<FlowRecord> = gen_records().into_iter().take(3000).collect();
    let shift = chrono::Utc::now() - chrono::Duration::minutes(10) - records[0].interval_start;
    for r in &mut records {
        r.interval_start += shift;
        r.interval_end += shift;
    }
    let pod_ns = |e: &flowlake_schemas::Endpoint| {
        e.identity
            .as_ref()
            .and_then(|i| Some((i.namespace.clone()?, i.pod.clone()?)))
    };
    let at = records
        .iter()
        .position(|r| {
            r.protocol == Protocol::Tcp
                && r.src.port.is_some()
                && r.dst.port.is_some()
                && pod_ns(&r.src).is_some()
                && pod_ns(&r.src).map(|p| p.0) == pod_ns(&r.dst).map(|p| p.0)
                && r.src.ip.is_ipv4()
        })
        .expect("a pod-to-pod TCP flow in the workload");
    // Its record runs through the capture made a moment from now.
    let now = chrono::Utc::now();
    records[at].interval_start = now - chrono::Duration::seconds(3);
    records[at].interval_end = now + chrono::Duration::seconds(60);
    let flow = records[at].clone();
    (records, flow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_are_created_seen_downloaded_looked_up_scoped_deleted_and_expired() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("flows");
    let (records, flow) = recent_records();
    append(&table, &records).await;
    let src = flow.src.identity.clone().unwrap();
    let dst = flow.dst.identity.clone().unwrap();
    let ns = src.namespace.clone().unwrap();
    let (src_pod, dst_pod) = (src.pod.clone().unwrap(), dst.pod.clone().unwrap());
    let mut cfg = QueryConfig::for_tests(table.to_str().unwrap());
    cfg.token_file = Some(tokens(dir.path(), &ns));
    let q = start(cfg).await;
    let base = url(&q, "");
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    // Bad input: a clear 4xx, nothing stored.
    let good = json!({"namespace": ns, "selector": "app=web", "filter": "tcp or udp", "duration_secs": 30});
    let spoil = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    for (body, status) in [
        (spoil("namespace", json!("Not_A_Label")), 400),
        (spoil("namespace", json!("nowhere")), 400),
        (spoil("selector", json!("app in (")), 400),
        (spoil("filter", json!("vlan 3")), 400),
        (spoil("duration_secs", json!(0)), 400),
        (spoil("duration_secs", json!(86_400)), 400),
        (spoil("max_bytes", json!(1u64 << 40)), 400),
        (spoil("snaplen", json!(10)), 400),
        (spoil("colour", json!("red")), 400),
    ] {
        let (s, b) = call(
            &base,
            post.clone(),
            "/api/v1/captures",
            OPS,
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, status, "{body}: {}", String::from_utf8_lossy(&b));
    }
    let (s, _) = call(
        &base,
        post.clone(),
        "/api/v1/captures",
        OTHER,
        Some(good.clone()),
    )
    .await;
    assert_eq!(s, 403, "a token of another namespace may not capture here");
    let (s, _) = call(
        &base,
        post.clone(),
        "/api/v1/captures",
        "nope",
        Some(good.clone()),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        !table.join("_captures").exists(),
        "nothing stored by refused requests"
    );

    let (s, b) = call(
        &base,
        post.clone(),
        "/api/v1/captures",
        TEAM,
        Some(good.clone()),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let created = json_of(&b);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["requested_by"], "team");
    assert_eq!(created["max_bytes"], 100_000_000, "default limit filled in");
    let stored: Value =
        json_of(&std::fs::read(table.join(format!("_captures/{id}/request.json"))).unwrap());
    assert_eq!(stored, created, "the request collectors will read");

    // The nodes' files: the flow's packets both ways on node-a, other traffic on both.
    let (a, b_) = (
        (flow.src.ip, flow.src.port.unwrap()),
        (flow.dst.ip, flow.dst.port.unwrap()),
    );
    let stranger: IpAddr = "192.0.2.9".parse().unwrap();
    let mut frames_a = Vec::new();
    for n in 0..7 {
        frames_a.push(frame(6, a, b_, 10 * n));
        frames_a.push(frame(6, b_, a, 5));
    }
    frames_a.push(frame(17, a, b_, 20)); // the same ends in UDP: another flow
    frames_a.push(frame(6, a, (stranger, b_.1), 3));
    let frames_b = vec![
        frame(6, (stranger, 40000), b_, 9),
        frame(6, b_, (stranger, 40000), 9),
    ];
    let file_a = pcapng(&id, "node-a", &src_pod, &frames_a);
    let file_b = pcapng(&id, "node-b", &dst_pod, &frames_b);
    store_node(&table, &id, "node-a", &file_a, vec![row(&ns, &src_pod, 16)]);
    store_node(
        &table,
        &id,
        "node-b",
        &file_b,
        vec![row(&ns, &dst_pod, 2), row("elsewhere", "intruder", 5)],
    );

    // Status: request, nodes, files, and the flows of the captured pods.
    let (s, b) = call(
        &base,
        get.clone(),
        &format!("/api/v1/captures/{id}"),
        TEAM,
        None,
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let status = json_of(&b);
    assert_eq!(status["nodes"]["node-a"]["state"], "done");
    assert_eq!(status["files"].as_object().unwrap().len(), 2);
    let flows = status["flows"].as_array().unwrap();
    let src_port = a.1.to_string();
    assert!(
        flows.iter().any(|f| f["src_pod"] == src_pod.as_str()
            && f["dst_pod"] == dst_pod.as_str()
            && f["src_port"] == src_port.as_str()),
        "the flow is among those the capture saw: {flows:?}"
    );
    let (s, _) = call(
        &base,
        get.clone(),
        &format!("/api/v1/captures/{id}"),
        OTHER,
        None,
    )
    .await;
    assert_eq!(s, 404, "another namespace's token does not see it");
    let (_, b) = call(&base, get.clone(), "/api/v1/captures", OTHER, None).await;
    assert_eq!(json_of(&b), json!([]));
    let (_, b) = call(&base, get.clone(), "/api/v1/captures", TEAM, None).await;
    assert_eq!(json_of(&b)[0]["id"], id.as_str());

    // Downloads, read back by tshark.
    let (s, merged) = call(
        &base,
        get.clone(),
        &format!("/api/v1/captures/{id}/download"),
        TEAM,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(merged.len(), file_a.len() + file_b.len());
    let flow_arg = format!("tcp {}:{} {}:{}", a.0, a.1, b_.0, b_.1);
    let path = format!(
        "/api/v1/captures/{id}/download?flow={}",
        urlencode(&flow_arg)
    );
    let (s, only) = call(&base, get.clone(), &path, TEAM, None).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&only));
    let (s, one_node) = call(
        &base,
        get.clone(),
        &format!("/api/v1/captures/{id}/download?node=node-b"),
        TEAM,
        None,
    )
    .await;
    assert_eq!((s, one_node.as_slice()), (200, file_b.as_slice()));
    let (s, _) = call(
        &base,
        get.clone(),
        &format!("/api/v1/captures/{id}/download"),
        OTHER,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &base,
        get.clone(),
        &format!("/api/v1/captures/{id}/download?flow=tcp%201.2.3.4"),
        TEAM,
        None,
    )
    .await;
    assert_eq!(s, 400);
    let merged_file = dir.path().join("merged.pcapng");
    let only_file = dir.path().join("only.pcapng");
    std::fs::write(&merged_file, &merged).unwrap();
    std::fs::write(&only_file, &only).unwrap();
    let equivalent = format!(
        "tcp && ip.addr == {} && ip.addr == {} && tcp.port == {} && tcp.port == {}",
        a.0, b_.0, a.1, b_.1
    );
    match tshark_count(&merged_file, "") {
        Some(all) => {
            assert_eq!(all, frames_a.len() + frames_b.len());
            let want = tshark_count(&merged_file, &equivalent).unwrap();
            assert_eq!(want, 14, "tshark's count of the flow in the merged file");
            assert_eq!(tshark_count(&only_file, "").unwrap(), want);
            assert_eq!(tshark_count(&only_file, &equivalent).unwrap(), want);
        }
        None => {
            assert_ne!(
                std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").as_deref(),
                Ok("1"),
                "tshark missing"
            );
            eprintln!("SKIPPED the tshark readings: tshark is not installed");
        }
    }

    // The captures table, scoped as flows are.
    let sql = |t: &'static str| {
        let base = base.clone();
        async move {
            let body = json!({"sql": "SELECT namespace, pod, node, packets FROM captures ORDER BY node, pod"});
            let (s, b) = call(&base, reqwest::Method::POST, "/api/v1/sql", t, Some(body)).await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            json_of(&b)
        }
    };
    let all = sql(OPS).await;
    let team = sql(TEAM).await;
    let rows = |v: &Value| format!("{v}").matches("\"node\"").count();
    assert_eq!(rows(&all), 3, "{all}");
    assert_eq!(rows(&team), 2, "{team}");
    assert!(!format!("{team}").contains("intruder"));

    // Flow → capture lookup.
    let now = chrono::Utc::now();
    let lookup = format!(
        "/api/v1/captures/lookup?flow={}&from={}&to={}",
        urlencode(&flow_arg),
        urlencode(&(now - chrono::Duration::minutes(15)).to_rfc3339()),
        urlencode(&now.to_rfc3339())
    );
    let (s, b) = call(&base, get.clone(), &lookup, TEAM, None).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let found = json_of(&b);
    let nodes: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["node"].as_str().unwrap())
        .collect();
    assert!(
        nodes.contains(&"node-a") && nodes.contains(&"node-b"),
        "{found}"
    );
    let (_, b) = call(&base, get.clone(), &lookup, OTHER, None).await;
    assert_eq!(json_of(&b), json!([]));

    // Delete: cancelled for collectors, files gone.
    let (s, _) = call(
        &base,
        reqwest::Method::DELETE,
        &format!("/api/v1/captures/{id}"),
        OTHER,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, b) = call(
        &base,
        reqwest::Method::DELETE,
        &format!("/api/v1/captures/{id}"),
        TEAM,
        None,
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let left: Vec<String> = std::fs::read_dir(table.join("_captures").join(&id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["request.json"]);
    let stored: Value =
        json_of(&std::fs::read(table.join(format!("_captures/{id}/request.json"))).unwrap());
    assert_eq!(stored["cancelled"], true);

    // Retention: gone a week after it ended, kept before.
    let files = q.state().engine.captures().clone();
    let week = std::time::Duration::from_secs(168 * 3600);
    let kept = flowlake_query::capture::retention::expire(&files, week, now)
        .await
        .unwrap();
    assert!(kept.is_empty());
    let later = now + chrono::Duration::days(8);
    let removed = flowlake_query::capture::retention::expire(&files, week, later)
        .await
        .unwrap();
    assert_eq!(removed, std::slice::from_ref(&id));
    let gone = table.join("_captures").join(&id);
    assert!(!gone.exists() || std::fs::read_dir(&gone).unwrap().next().is_none());
    q.stop().await.unwrap();
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

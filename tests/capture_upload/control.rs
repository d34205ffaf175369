//! The agent's capture control loop (`collector/src/capture/control.rs`)
//! against the ingester's real upload routes and store. The two control
//! routes (`GET /api/v1/captures/requests`, `PUT …/nodes/<node>/status`) are
//! served here by a small stand-in that keeps the requests and records every
//! status, as the ingester's control routes do (they are not merged into the
//! ingester yet).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, put};
use flowlake_collector::capture::control::{self, ControlConfig, PodSource};
use flowlake_collector::capture::pcapng::{Direction, read};
use flowlake_collector::capture::state::{self, Phase};
use flowlake_collector::capture::upload;
use flowlake_collector::capture::{PodInfo, runner};
use flowlake_ingester::capture::{self, CaptureStore};
use flowlake_schemas::capture::{CaptureRequest, NodeStatus};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Control {
    requests: Arc<Mutex<Vec<CaptureRequest>>>,
    statuses: Arc<Mutex<HashMap<String, Vec<NodeStatus>>>>,
}

impl Control {
    fn last(&self, id: &str) -> Option<NodeStatus> {
        self.statuses.lock().unwrap().get(id)?.last().cloned()
    }

    /// Waits until capture `id` reports `state`.
    async fn wait_for(&self, id: &str, state: &str) -> NodeStatus {
        for _ in 0..300 {
            if let Some(s) = self.last(id).filter(|s| s.state == state) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{id} never reported {state}: last {:?}", self.last(id));
    }
}

#[derive(serde::Deserialize)]
struct NodeQuery {
    node: String,
}

async fn serve(store: CaptureStore, control: Control) -> (String, tokio::task::JoinHandle<()>) {
    let routes = axum::Router::new()
        .route(
            control::REQUESTS_PATH,
            get(
                |State(c): State<Control>, Query(q): Query<NodeQuery>| async move {
                    let all = c.requests.lock().unwrap().clone();
                    Json(
                        all.into_iter()
                            .filter(|r| r.nodes.is_empty() || r.nodes.contains(&q.node))
                            .collect::<Vec<_>>(),
                    )
                },
            ),
        )
        .route(
            "/api/v1/captures/{id}/nodes/{node}/status",
            put(
                |State(c): State<Control>,
                 Path((id, _node)): Path<(String, String)>,
                 Json(s): Json<NodeStatus>| async move {
                    c.statuses.lock().unwrap().entry(id).or_default().push(s);
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(control)
        .merge(capture::router(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, routes).await;
    });
    (url, server)
}

fn request(id: &str, filter: &str, duration_secs: u64) -> CaptureRequest {
    CaptureRequest {
        id: id.into(),
        namespace: "shop".into(),
        selector: "app=web".into(),
        pods: Vec::new(),
        nodes: Vec::new(),
        filter: filter.into(),
        duration_secs,
        max_bytes: 10_000_000,
        max_packets: 100_000,
        snaplen: 1500,
        requested_by: "alice".into(),
        created: chrono::Utc::now().to_rfc3339(),
        cancelled: false,
    }
}

fn config(url: &str, dir: &std::path::Path) -> ControlConfig {
    ControlConfig {
        poll_every: Duration::from_millis(200),
        refresh_every: Duration::from_millis(100),
        retry_every: Duration::from_millis(100),
        chunk_bytes: 4096,
        ..ControlConfig::new(url.into(), "node-a".into(), dir.to_path_buf())
    }
}

fn start(cfg: ControlConfig, pods: PodSource) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let http: control::HttpSource = Arc::new(|| (reqwest::Client::new(), None));
    let task = tokio::spawn(control::run(
        cfg,
        http,
        pods,
        flowlake_collector::enrich::system_clock(),
        shutdown.clone(),
    ));
    (shutdown, task)
}

#[tokio::test]
async fn a_restart_uploads_finished_files_and_reports_interrupted_captures() {
    let spool = tempfile::tempdir().unwrap();
    let table = tempfile::tempdir().unwrap();
    let dir = spool.path();
    // What an earlier run left: one capture finished but not uploaded, one
    // running when the collector died.
    let file = runner::file_path(dir, "finished", "node-a");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"a finished capture file").unwrap();
    let (size, crc32c) = upload::file_crc32c(&file).await.unwrap();
    let description = upload::FileDescription {
        size,
        crc32c,
        filter: String::new(),
        requested_by: "alice".into(),
        stop_reason: "duration".into(),
        interfaces: Vec::new(),
        object_path: String::new(),
    };
    state::save(dir, "finished", "node-a", &Phase::Finished { description }).unwrap();
    state::save(dir, "interrupted", "node-a", &Phase::Running).unwrap();
    let partial = runner::file_path(dir, "interrupted", "node-a");
    std::fs::write(&partial, b"half a file").unwrap();

    let store = CaptureStore::local(table.path()).unwrap();
    let c = Control::default();
    // Served as active: the interrupted one must not start again. Plus a
    // capture with no selected pod on the node, and an invalid one.
    c.requests.lock().unwrap().extend([
        request("interrupted", "", 30),
        request("nobody", "", 1),
        request("bad-filter", "vlan 7", 30),
    ]);
    let (url, server) = serve(store.clone(), c.clone()).await;
    let (shutdown, task) = start(config(&url, dir), Arc::new(Vec::new));

    let done = c.wait_for("finished", "done").await;
    assert_eq!(done.node, "node-a");
    let stored = std::fs::read(table.path().join("_captures/finished/node-a.pcapng")).unwrap();
    assert_eq!(stored, b"a finished capture file");
    assert!(!file.exists(), "the spool's copy goes once stored");
    let failed = c.wait_for("interrupted", "failed").await;
    assert!(failed.error.contains("restarted"), "{}", failed.error);
    assert!(!partial.exists());
    let bad = c.wait_for("bad-filter", "failed").await;
    assert!(bad.error.contains("filter"), "{}", bad.error);
    c.wait_for("nobody", "skipped").await;
    shutdown.cancel();
    task.await.unwrap();
    let states: HashMap<String, Phase> = state::load_all(dir, "node-a").into_iter().collect();
    assert!(matches!(states["finished"], Phase::Done { .. }));
    assert!(matches!(states["interrupted"], Phase::Failed { .. }));
    assert!(
        !c.statuses.lock().unwrap()["interrupted"]
            .iter()
            .any(|s| s.state == "running"),
        "an interrupted capture is not started again"
    );
    server.abort();
}

/// Needs CAP_NET_RAW (a packet socket on loopback).
fn may_capture() -> bool {
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
        return true;
    }
    assert!(
        std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "FLOWLAKE_REQUIRE_PRIVILEGED=1 but no packet socket can be opened"
    );
    eprintln!("skipped: a packet socket needs CAP_NET_RAW");
    false
}

#[tokio::test]
async fn a_requested_capture_runs_reports_and_is_stored() {
    if !may_capture() {
        return;
    }
    let spool = tempfile::tempdir().unwrap();
    let table = tempfile::tempdir().unwrap();
    let store = CaptureStore::local(table.path()).unwrap();
    let c = Control::default();
    let (url, server) = serve(store.clone(), c.clone()).await;
    // The "pod" is this test's loopback, its interface given (no route lookup).
    let pods: PodSource = Arc::new(|| {
        vec![PodInfo {
            namespace: "shop".into(),
            name: "web-0".into(),
            node: "node-a".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ips: Vec::new(),
            interface: Some("lo".into()),
        }]
    });
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    c.requests
        .lock()
        .unwrap()
        .push(request("lo-capture", &format!("udp port {port}"), 3));
    let (shutdown, task) = start(config(&url, spool.path()), pods);
    c.wait_for("lo-capture", "running").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = 200u64;
    for i in 0..sent {
        sender
            .send_to(format!("packet {i}").as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    let running = c.wait_for("lo-capture", "running").await;
    assert!(running.packets <= 2 * sent);
    let done = c.wait_for("lo-capture", "done").await;
    // On loopback the socket sees each datagram leave and arrive.
    assert_eq!(done.packets, 2 * sent, "{done:?}");
    assert_eq!(done.lost, 0);
    assert_eq!(done.interfaces.len(), 1);
    assert_eq!(done.interfaces[0].pod, "web-0");
    let stored = std::fs::read(table.path().join("_captures/lo-capture/node-a.pcapng")).unwrap();
    let f = read::parse(&stored).expect("a pcapng file");
    let count = |d| f.packets.iter().filter(|p| p.direction == Some(d)).count() as u64;
    assert_eq!(
        (count(Direction::Outbound), count(Direction::Inbound)),
        (sent, sent)
    );
    assert!(f.interfaces[0].name.starts_with("shop/web-0@node-a"));
    shutdown.cancel();
    task.await.unwrap();
    server.abort();
}

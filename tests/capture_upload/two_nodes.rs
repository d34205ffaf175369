//! A label-selected capture on two nodes through the real parts: two node
//! namespaces with lab pods, one real `flowlake collector` process per node
//! (pods named by the fake Kubernetes API), a real ingester (stopped for a
//! while during the upload), a real query service, and the `flowlake
//! capture` CLI. Each node's pcapng holds exactly what tcpdump saw on the same
//! veth (per direction); the `captures` table, the flow → capture lookup and
//! `download --flow` agree with it; bad requests are refused and start nothing.
//!
//! Needs root and BPF; skips with a reason otherwise, fails when
//! FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use flowlake_schemas::capture::pcapng::{Direction, read};
use serde_json::Value;

use super::lab::{self, Agent};
use crate::pipeline::fake_kube::FakeKube;
use crate::pipeline::harness::{Capture, Topology, ping, privileged};
use crate::pipeline::sql;

const UDP: u8 = 17;
const ICMP: u8 = 1;

/// `flowlake capture --url <base> <args>`: (success, stdout, stderr).
async fn cli(base: &str, args: &[&str]) -> (bool, String, String) {
    let mut c = crate::flowlake();
    c.args(["capture", "--url", base]).args(args);
    let out = tokio::process::Command::from(c).output().await.unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

async fn cli_json(base: &str, args: &[&str]) -> Value {
    let (ok, out, err) = cli(base, args).await;
    assert!(ok, "flowlake capture {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("{args:?}: {out}"))
}

/// Polls `flowlake capture status id` until `done` holds (two minutes at most).
async fn wait_status(base: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        last = cli_json(base, &["status", id]).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{id}: never {what}: {last:#}");
}

fn state_of<'a>(s: &'a Value, node: &str) -> &'a str {
    s["nodes"][node]["state"].as_str().unwrap_or("")
}

/// Whether `node` reports `pod` among the interfaces it captures.
fn captures_pod(s: &Value, node: &str, pod: &str) -> bool {
    s["nodes"][node]["interfaces"]
        .as_array()
        .is_some_and(|i| i.iter().any(|i| i["pod"] == pod))
}

async fn download(base: &str, id: &str, node: &str, flow: Option<&str>, out: &Path) -> read::File {
    let out_s = out.to_string_lossy().into_owned();
    let mut args = vec!["download", id, "--node", node, "-o", &out_s];
    if let Some(f) = flow {
        args.extend(["--flow", f]);
    }
    let (ok, _, err) = cli(base, &args).await;
    assert!(ok, "download {args:?}: {err}");
    read::parse(&std::fs::read(out).unwrap()).expect("a pcapng file")
}

/// tshark's interface names of a file's packets, or None (tshark missing,
/// outside CI).
fn tshark_interfaces(file: &Path) -> Option<BTreeSet<String>> {
    let lines = flowlake_testkit::tshark_fields(file, &["frame.interface_name"])?;
    Some(lines.into_iter().collect())
}

/// tcpdumps of pod `i`'s veth: (in, out).
fn tcpdumps(t: &Topology, i: usize, dir: &Path, name: &str) -> (Capture, Capture) {
    let (ns, iface) = (t.node_ns(), t.pods[i].host_if.clone());
    let file = |d: &str| dir.join(format!("{name}-{d}.pcap"));
    (
        Capture::start(&ns, &iface, "in", file("in")),
        Capture::start(&ns, &iface, "out", file("out")),
    )
}

/// What tcpdump saw of one pod, per direction: (packets, IP bytes) of UDP,
/// and ICMP packets (which the capture's filter leaves out).
struct Seen {
    udp: HashMap<Direction, (u64, u64)>,
    icmp: u64,
}

fn stop((inbound, outbound): (Capture, Capture)) -> Seen {
    let (i, o) = (inbound.stop(), outbound.stop());
    Seen {
        udp: HashMap::from([
            (Direction::Inbound, lab::of_protocol(&i, UDP)),
            (Direction::Outbound, lab::of_protocol(&o, UDP)),
        ]),
        icmp: lab::of_protocol(&i, ICMP).0 + lab::of_protocol(&o, ICMP).0,
    }
}

async fn bad_requests_are_refused_and_start_nothing(base: &str) {
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{base}/api/v1/captures"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send();
            r.await.unwrap().status().as_u16()
        }
    };
    let shop = |k: &str, v: Value| {
        let mut b = serde_json::json!({"namespace": "shop", "selector": "app=web"});
        b[k] = v;
        b
    };
    for (body, what) in [
        (
            serde_json::json!({"namespace": "nowhere"}),
            "unknown namespace",
        ),
        (shop("selector", "=web".into()), "invalid selector"),
        (shop("filter", "vlan 7".into()), "unsupported filter"),
        (shop("duration_secs", 0.into()), "zero duration"),
        (shop("duration_secs", 86_400.into()), "huge duration"),
        (shop("max_bytes", 0.into()), "zero size"),
        (shop("max_bytes", 5_000_000_000u64.into()), "huge size"),
    ] {
        assert_eq!(post(body).await, 400, "{what}");
    }
    let missing = http
        .get(format!("{base}/api/v1/captures/no-such-capture"))
        .send();
    assert_eq!(missing.await.unwrap().status().as_u16(), 404);
    let create = |extra: &'static [&'static str]| {
        let mut a = vec!["create", "--namespace", "shop"];
        a.extend_from_slice(extra);
        a
    };
    let refused: [(Vec<&str>, &str); 10] = [
        (vec!["create", "--namespace", "nowhere"], "bad request"),
        (create(&["--selector", "=web"]), "bad request"),
        (create(&["--filter", "vlan 7"]), "bad request"),
        (create(&["--duration", "0s"]), "bad request"),
        (create(&["--duration", "2h"]), "bad request"),
        (create(&["--max-bytes", "0"]), "bad request"),
        (create(&["--max-bytes", "5GB"]), "bad request"),
        (vec!["status", "no-such-capture"], "not found"),
        (vec!["download", "no-such-capture"], "not found"),
        (vec!["delete", "no-such-capture"], "not found"),
    ];
    for (args, says) in refused {
        let (ok, _, err) = cli(base, &args).await;
        assert!(
            !ok && err.contains(says),
            "{args:?} must fail with {says}: {err}"
        );
    }
    let list = cli_json(base, &["list"]).await;
    assert_eq!(list, serde_json::json!([]), "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_label_selected_capture_on_two_nodes_through_the_real_services() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().to_path_buf();
    let mut a = Topology::new(67, 2);
    let b = Topology::new(68, 2);
    let kube = FakeKube::default();
    lab::list(&kube, &a, 0, "web-a", "node-a", "web");
    lab::list(&kube, &a, 1, "db-a", "node-a", "db");
    lab::list(&kube, &b, 0, "web-b", "node-b", "web");
    lab::list(&kube, &b, 1, "db-b", "node-b", "db");
    let kubeconfig = lab::kubeconfig(d, kube.serve().await);

    let table = d.join("table");
    let mut ingest = flowlake_ingester::IngesterConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        wal_dir: d.join("wal"),
        ..Default::default()
    };
    ingest.table.location = table.to_string_lossy().into_owned();
    ingest.flush.max_age = Duration::from_secs(1);
    let ingester = flowlake_ingester::Ingester::start(ingest.clone())
        .await
        .unwrap();
    ingest.listen = ingester.addr();
    let mut q = flowlake_query::QueryConfig::for_tests(table.to_string_lossy());
    q.captures.without_auth = true;
    let query = flowlake_query::QueryService::start(q).await.unwrap();
    let base = format!("http://{}", query.addr());
    let agents = [
        Agent::start(&a, "node-a", ingest.listen, &kubeconfig, d),
        Agent::start(&b, "node-b", ingest.listen, &kubeconfig, d),
    ];

    // Pods talk: db → web on UDP (6000 → 7000), and the flow table learns
    // namespace shop (a capture's namespace must have been seen).
    let (web_a, db_a) = (lab::udp_socket(&a, 0, 7000), lab::udp_socket(&a, 1, 6000));
    let (web_b, db_b) = (lab::udp_socket(&b, 0, 7000), lab::udp_socket(&b, 1, 6000));
    let mut seen = false;
    for _ in 0..120 {
        lab::exchange(&db_a, &web_a, 2, 200);
        lab::exchange(&db_b, &web_b, 2, 200);
        let n = sql(
            &base,
            "select count(*) as n from flows where src_namespace = 'shop'",
        )
        .await;
        if n[0]["n"].as_u64() > Some(0) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen,
        "no flows of namespace shop reached the table (see {d:?}/node-*.log)"
    );
    bad_requests_are_refused_and_start_nothing(&base).await;
    // Node state the snapshot must show: an nftables table and a listening socket.
    let listeners = [&a, &b].map(|t| lab::node_state(t, 7999));

    // The capture: app=web in shop, UDP only.
    let created = cli_json(
        &base,
        &[
            "create",
            "--namespace",
            "shop",
            "--selector",
            "app=web",
            "--filter",
            "udp",
            "--duration",
            "25s",
        ],
    )
    .await;
    let id = created["id"].as_str().expect("an id").to_string();
    let start = chrono::DateTime::parse_from_rfc3339(created["created"].as_str().unwrap()).unwrap();
    wait_status(&base, &id, "running on both nodes", |s| {
        captures_pod(s, "node-a", "web-a") && captures_pod(s, "node-b", "web-b")
    })
    .await;
    let dumps_a = tcpdumps(&a, 0, d, "web-a");
    let dumps_b = tcpdumps(&b, 0, d, "web-b");
    lab::exchange(&db_a, &web_a, 40, 300);
    lab::exchange(&db_b, &web_b, 40, 300);
    tokio::task::block_in_place(|| {
        ping(&a, 1, a.pods[0].v4, 3);
        ping(&b, 1, b.pods[0].v4, 3);
    });
    // A matching pod starts on node a during the capture.
    a.add_pod(2);
    lab::list(&kube, &a, 2, "web-a2", "node-a", "web");
    wait_status(&base, &id, "capturing web-a2", |s| {
        captures_pod(s, "node-a", "web-a2")
    })
    .await;
    let dumps_a2 = tcpdumps(&a, 2, d, "web-a2");
    let web_a2 = lab::udp_socket(&a, 2, 7000);
    lab::exchange(&db_a, &web_a2, 20, 300);
    let (seen_a, seen_b, seen_a2) =
        tokio::task::block_in_place(|| (stop(dumps_a), stop(dumps_b), stop(dumps_a2)));

    // The ingester is away from before the end of the capture until after it:
    // the files wait on the nodes and are sent once it is back.
    ingester.shutdown().await.unwrap();
    let end = start + chrono::Duration::seconds(25 + 4);
    let wait = (end.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let during = cli_json(&base, &["status", &id]).await;
    assert!(
        during["files"].as_object().is_none_or(|f| f.is_empty()),
        "{during:#}"
    );
    let ingester = flowlake_ingester::Ingester::start(ingest.clone())
        .await
        .unwrap();
    let status = wait_status(&base, &id, "done on both nodes", |s| {
        state_of(s, "node-a") == "done" && state_of(s, "node-b") == "done"
    })
    .await;

    let file_a = download(&base, &id, "node-a", None, &d.join("a.pcapng")).await;
    let file_b = download(&base, &id, "node-b", None, &d.join("b.pcapng")).await;
    // Each pod answered every datagram of its exchange (40, 20 and 40 rounds).
    for (file, name, seen, rounds) in [
        (&file_a, "shop/web-a@node-a", &seen_a, 40),
        (&file_a, "shop/web-a2@node-a", &seen_a2, 20),
        (&file_b, "shop/web-b@node-b", &seen_b, 40),
    ] {
        assert_eq!(
            lab::per_direction(file, name, UDP),
            seen.udp,
            "{name}: pcapng vs tcpdump (packets, bytes) per direction"
        );
        assert!(
            seen.udp[&Direction::Inbound].0 >= rounds,
            "{name}: {:?}",
            seen.udp
        );
    }
    assert!(
        seen_a.icmp >= 6 && seen_b.icmp >= 6,
        "tcpdump saw the pings"
    );
    for (file, node) in [(&file_a, "node-a"), (&file_b, "node-b")] {
        assert_eq!(
            lab::others(file, UDP),
            0,
            "--filter udp: nothing else in {node}'s file"
        );
        let names: Vec<&str> = file.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("shop/db-")),
            "unselected pods absent: {names:?}"
        );
        let n = &status["nodes"][node];
        assert_eq!(
            n["packets"].as_u64(),
            Some(file.packets.len() as u64),
            "{n}"
        );
        assert_eq!(n["lost"].as_u64(), Some(0), "{n}");
    }
    assert_eq!(file_a.interfaces.len(), 2);
    assert_eq!(file_b.interfaces.len(), 1);
    if let Some(names) = tshark_interfaces(&d.join("a.pcapng")) {
        assert!(
            names.iter().any(|n| n.starts_with("shop/web-a@node-a")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("shop/web-a2@node-a")),
            "{names:?}"
        );
    }

    // Each node's network snapshot, taken at the start, is stored next to its file.
    assert_eq!(status["snapshots"], serde_json::json!(["node-a", "node-b"]));
    for (t, node) in [(&a, "node-a"), (&b, "node-b")] {
        let out = d.join(format!("{node}.snapshot.txt"));
        let out_s = out.to_string_lossy().into_owned();
        let args = ["download", &id, "--node", node, "--snapshot", "-o", &out_s];
        let (ok, _, err) = cli(&base, &args).await;
        assert!(ok, "{args:?}: {err}");
        // The pods that ran when the capture started: the first two.
        lab::check_snapshot(t, 2, &std::fs::read_to_string(&out).unwrap(), 7999);
    }
    drop(listeners);

    // The captures table: one row per captured pod, counts as in the files.
    let rows = sql(
        &base,
        &format!("select node, pod, packets from captures where id = '{id}' order by node, pod"),
    )
    .await;
    let count = |f: &read::File, name: &str| {
        let i = f
            .interfaces
            .iter()
            .position(|i| i.name.starts_with(name))
            .unwrap();
        f.packets
            .iter()
            .filter(|p| p.interface as usize == i)
            .count() as u64
    };
    let want = [
        ("node-a", "web-a", count(&file_a, "shop/web-a@")),
        ("node-a", "web-a2", count(&file_a, "shop/web-a2@")),
        ("node-b", "web-b", count(&file_b, "shop/web-b@")),
    ];
    let got: Vec<(&str, &str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap(),
                r["pod"].as_str().unwrap(),
                r["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);

    // Flow → capture: web-a's flow is covered by node a's file, and its
    // download holds exactly that flow's packets, both directions.
    let flow = format!("udp {}:6000 {}:7000", a.pods[1].v4, a.pods[0].v4);
    let (from, to) = (
        (start - chrono::Duration::seconds(5)).to_rfc3339(),
        chrono::Utc::now().to_rfc3339(),
    );
    let mut covering = Value::Null;
    for _ in 0..60 {
        covering = cli_json(
            &base,
            &["lookup", "--flow", &flow, "--from", &from, "--to", &to],
        )
        .await;
        if covering
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["id"] == id.as_str()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ours: Vec<&Value> = covering
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id.as_str())
        .collect();
    assert!(!ours.is_empty(), "{covering:#}");
    assert!(
        ours.iter()
            .all(|c| c["node"] == "node-a" && c["pod"] == "web-a"),
        "{covering:#}"
    );
    let only = download(&base, &id, "node-a", Some(&flow), &d.join("flow.pcapng")).await;
    let (i, o) = (
        seen_a.udp[&Direction::Inbound].0,
        seen_a.udp[&Direction::Outbound].0,
    );
    assert_eq!(
        only.packets.len() as u64,
        i + o,
        "the flow's packets, both directions"
    );

    // The size limit stops a capture, and its status says why.
    let limited = cli_json(
        &base,
        &[
            "create",
            "--namespace",
            "shop",
            "--selector",
            "app=web",
            "--node",
            "node-b",
            "--max-bytes",
            "20KB",
            "--duration",
            "60s",
        ],
    )
    .await;
    let lid = limited["id"].as_str().unwrap().to_string();
    wait_status(&base, &lid, "running on node b", |s| {
        captures_pod(s, "node-b", "web-b")
    })
    .await;
    lab::exchange(&db_b, &web_b, 100, 600);
    let s = wait_status(&base, &lid, "done on node b", |s| {
        state_of(s, "node-b") == "done"
    })
    .await;
    let f = &s["files"]["node-b"];
    assert_eq!(f["stop_reason"], "max_bytes", "{s:#}");
    assert!(f["size"].as_u64().is_some_and(|n| n <= 20_000), "{f}");
    assert!(
        s["nodes"].get("node-a").is_none(),
        "--node node-b: node a never took part: {s:#}"
    );
    assert!(
        s["nodes"]["node-b"]["packets"].as_u64() < Some(200),
        "{s:#}"
    );

    drop(agents);
    ingester.shutdown().await.unwrap();
    query.stop().await.unwrap();
    drop((a, b));
}

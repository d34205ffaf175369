//! Every Prometheus panel of every shipped Grafana dashboard shows data on a
//! default install. The lab: "pods" are network namespaces on a bridge named by a
//! protocol-faithful fake Kubernetes API server (the `shop` namespace), plus a node
//! interface (`up0`) to an "outside" namespace; the real eBPF collector observes
//! them with the metrics mode the chart deploys (the defaults: remote context,
//! `source_`/`destination_` labels), and a real Prometheus server (Debian package)
//! scrapes its `/metrics`. The traffic: a TCP transfer with nftables losses
//! (retransmits, drops), DNS through dnsmasq, pings to the outside. Each panel's
//! expression, with `$namespace` and `$pod` filled with a real namespace and pod,
//! returns a non-empty vector with a positive rate (the lost-events panel: non-empty,
//! since nothing is lost).
//!
//! Needs root, BPF, Prometheus and dnsmasq; skips with a reason otherwise, fails
//! when FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowlake_collector::enrich::system_clock;
use flowlake_collector::retina::{self, LossSources, RetinaConfig, RetinaMetrics};
use flowlake_collector::{Datapath, DatapathConfig, DatapathMetrics};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::pipeline::fake_kube::FakeKube;
use crate::pipeline::harness::{Topology, in_netns, ping_from, privileged, sh};

#[allow(dead_code)]
#[path = "../collector/tests/retina/prom.rs"]
mod prom;

const SUBNET: u8 = 48;
const NAMESPACE: &str = "shop";
/// The server pod: its input drops and its DNS answers carry its name.
const POD: &str = "server-0";
/// Panels whose rate may be zero on a healthy node (nothing was lost).
const MAY_BE_ZERO: &[&str] = &["networkobservability_lost_events_counter"];

/// An "outside" namespace reached from the node through `up0`, a node interface
/// (a veth whose peer stays in the node namespace, bridged to the outside).
struct Outside {
    ns: String,
    addr: IpAddr,
}

impl Outside {
    fn new(t: &Topology) -> Outside {
        let ns = format!("{}o", t.id);
        let node = t.node_ns();
        sh(&["ip", "netns", "add", &ns]);
        t.node(&[
            "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1",
        ]);
        t.node(&["ip", "link", "add", "br1", "type", "bridge"]);
        t.node(&["ip", "link", "set", "up1", "master", "br1"]);
        let host_if = format!("{}ov", t.id);
        sh(&[
            "ip", "link", "add", &host_if, "netns", &node, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        t.node(&["ip", "link", "set", &host_if, "master", "br1"]);
        for dev in ["up0", "up1", "br1", host_if.as_str()] {
            t.node(&["ip", "link", "set", dev, "up"]);
        }
        let up0 = format!("10.78.{SUBNET}.1/24");
        t.node(&["ip", "addr", "add", &up0, "dev", "up0"]);
        let addr = format!("10.78.{SUBNET}.2");
        let cidr = format!("{addr}/24");
        sh(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        Outside {
            ns,
            addr: addr.parse().unwrap(),
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// dnsmasq in pod 1, killed when dropped.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(t: &Topology) -> Dnsmasq {
        let child = Command::new("ip")
            .args(["netns", "exec", &t.pods[1].ns, "dnsmasq", "--no-daemon"])
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
            .arg(format!("--listen-address={}", t.pods[1].v4))
            .args([
                "--local=/test/",
                "--pid-file=",
                "--address=/known.test/10.0.0.9",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq");
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DNS query for an A record of `name`, recursion desired.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    b
}

/// One round of traffic: a transfer from pod 0 to pod 1 losing every tenth
/// segment in pod 1's nftables (retransmits and drops), two DNS queries from pod 0
/// answered by pod 1, and pings from the node to the outside. Returns the DNS
/// answers received.
fn traffic(t: &Topology, outside: IpAddr, round: u16) -> usize {
    let server = t.pods[1].v4;
    let to = SocketAddr::new(server, 5101);
    let sink = crate::pipeline::tcp_sink(t, 1, to);
    let answers = in_netns(t.pod_ns_path(0), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.write_all(&vec![7u8; 1 << 20]).unwrap();
        drop(s);
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut answers = 0;
        for (i, name) in ["known.test", "missing.test"].iter().enumerate() {
            let id = round * 2 + i as u16;
            u.send_to(&dns_query(id, name), SocketAddr::new(server, 53))
                .unwrap();
            let mut buf = [0u8; 512];
            answers += usize::from(u.recv(&mut buf).is_ok());
        }
        answers
    })
    .join()
    .unwrap();
    assert_eq!(sink.join().unwrap(), 1 << 20);
    ping_from(t.node_ns_path(), outside, 3);
    answers
}

/// Every Prometheus expression of the shipped dashboards: (file, panel title, expr).
fn prometheus_panels() -> Vec<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/flowlake/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in d["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                if target["datasource"]["type"] != "prometheus" {
                    continue;
                }
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$namespace", NAMESPACE)
                    .replace("$pod", POD);
                assert!(
                    !expr.contains('$'),
                    "{}: unfilled variable in {expr}",
                    path.display()
                );
                let file = path.file_name().unwrap().to_string_lossy().into_owned();
                out.push((file, panel["title"].as_str().unwrap().to_string(), expr));
            }
        }
    }
    out
}

/// Why the panel shows no data yet, or None when it does.
async fn missing(prom: &prom::Prometheus, expr: &str) -> Option<String> {
    let samples = match prom.query(expr).await {
        Ok(s) => s,
        Err(e) => return Some(e),
    };
    if samples.is_empty() {
        return Some("empty result".into());
    }
    let positive = samples.iter().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    });
    if !positive && !MAY_BE_ZERO.iter().any(|m| expr.contains(m)) {
        return Some(format!("only zero rates: {samples:?}"));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prometheus_panel_shows_data_on_a_default_install() {
    if !privileged() {
        return;
    }
    let require = std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    if Command::new("dnsmasq").arg("--version").output().is_err() {
        assert!(!require, "dnsmasq missing (Debian package dnsmasq)");
        eprintln!("skipped: no dnsmasq (set FLOWLAKE_REQUIRE_PRIVILEGED=1 to fail instead)");
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prom = match prom::Prometheus::start(listener.local_addr().unwrap()) {
        Ok(p) => p,
        Err(reason) if !require => {
            eprintln!("skipped: {reason} (set FLOWLAKE_REQUIRE_PRIVILEGED=1 to fail instead)");
            return;
        }
        Err(reason) => panic!("{reason}"),
    };
    let panels = prometheus_panels();
    assert!(panels.len() >= 10, "{} Prometheus panels", panels.len());

    let t = Topology::new(SUBNET, 2);
    let outside = Outside::new(&t);
    t.drop_input_in_pod(
        1,
        &["tcp", "dport", "5101", "numgen", "inc", "mod", "10", "5"],
    );
    let _dns = Dnsmasq::start(&t);
    let shutdown = CancellationToken::new();

    let kube = FakeKube::default();
    crate::pipeline::cluster(&kube, t.pods[0].v4, t.pods[1].v4);
    let mut registry = Registry::default();
    let ips = [t.pods[0].v4, t.pods[1].v4];
    let (enricher, watch) =
        crate::pipeline::enricher_of(&kube, &ips, &mut registry, &shutdown).await;

    // The chart sets no metrics mode or context labels: the defaults are what ships.
    let datapath_metrics = DatapathMetrics::new(&mut registry);
    let losses = LossSources {
        datapath: Some(datapath_metrics.clone()),
        ship: None,
    };
    let metrics = RetinaMetrics::register(
        &mut registry,
        &RetinaConfig::default(),
        losses,
        system_clock(),
    );
    let config = DatapathConfig {
        netns: Some(t.node_ns_path()),
        node_interfaces: vec!["up0".into()],
        active_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..DatapathConfig::for_tests()
    };
    let (datapath, flows) =
        tokio::task::spawn_blocking(move || Datapath::start(config, datapath_metrics))
            .await
            .unwrap()
            .expect("start datapath");
    let http = tokio::spawn(retina::serve(
        listener,
        retina::router(Arc::new(registry)),
        shutdown.clone(),
    ));
    let (ship, mut shipped) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while shipped.recv().await.is_some() {} });
    let forward = tokio::spawn(flowlake_collector::agent::forward(
        flows,
        enricher,
        ship,
        Some(metrics),
    ));

    // Rounds of traffic until every panel shows data: the first creates the
    // series, the next make their rates positive (Prometheus scrapes every second).
    let t = Arc::new(t);
    let outside_addr = outside.addr;
    let mut left: Vec<(String, String, String, String)> = Vec::new();
    for round in 0..12u16 {
        let lab = t.clone();
        let answers = tokio::task::spawn_blocking(move || traffic(&lab, outside_addr, round))
            .await
            .unwrap();
        assert_eq!(answers, 2, "dnsmasq answered both queries");
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            left.clear();
            for (file, title, expr) in &panels {
                if let Some(why) = missing(&prom, expr).await {
                    left.push((file.clone(), title.clone(), expr.clone(), why));
                }
            }
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if left.is_empty() {
            break;
        }
    }
    for (file, title, expr) in &panels {
        let samples = prom.query(expr).await.unwrap_or_default();
        eprintln!("{file} / {title}: {} series: {expr}", samples.len());
    }
    assert!(left.is_empty(), "panels without data: {left:#?}");
    // What the panels filtered on before: the default mode has no bare `namespace`.
    let bare = format!(r#"networkobservability_adv_drop_count{{namespace="{NAMESPACE}"}}"#);
    assert_eq!(prom.query(&bare).await, Ok(Vec::new()), "{bare}");

    tokio::task::spawn_blocking(move || datapath.stop())
        .await
        .unwrap()
        .unwrap();
    forward.await.unwrap();
    drain.await.unwrap();
    shutdown.cancel();
    http.await.unwrap().unwrap();
    watch.join().await;
    drop(outside);
}

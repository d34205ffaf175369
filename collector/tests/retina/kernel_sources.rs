//! The kernel metric sources on the real kernel, scraped by a real Prometheus:
//! two network namespaces joined by a veth (IPv6 off, static neighbours: the only
//! packets are the test's TCP), conntrack with accounting in the client's
//! namespace, a known transfer and three connections kept open. The collector
//! reads the client namespace's proc and sys (through a process living in it).
//! Truth is the kernel's own, read another way: `ip -s -j link` (netlink) for
//! `interface_stats`; the veth's counters for the conntrack totals (conntrack
//! counts IP lengths, the veth adds a 14-byte Ethernet header per packet); the
//! connections the test opened for `tcp_connection_remote` and
//! `conntrack_total_connections`. Every source reports itself up.
//!
//! Needs root and Prometheus; skips with a reason otherwise, fails when
//! FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowlake_collector::enrich::system_clock;
use flowlake_collector::retina::{LossSources, RetinaConfig, RetinaMetrics, router, serve};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::prom::Prometheus;

use crate::datapath::harness::{in_netns, privileged, sh};

const TRANSFER: usize = 200_000;
const REPLY: usize = 30_000;
const OPEN: usize = 3;

/// Two namespaces `<id>a` (10.79.0.1) and `<id>b` (10.79.0.2) joined by a veth
/// (`ct0` in a, `ct1` in b), removed on drop; plus a process living in `a`.
struct Lab {
    a: String,
    b: String,
    resident: Option<Child>,
}

impl Lab {
    fn new() -> Lab {
        let id = format!("flkct{}", std::process::id() % 10000);
        let (a, b) = (format!("{id}a"), format!("{id}b"));
        // Built first, so that a failed step still removes what was made.
        let mut lab = Lab {
            a: a.clone(),
            b: b.clone(),
            resident: None,
        };
        for ns in [&a, &b] {
            sh(&["ip", "netns", "add", ns]);
            for key in ["all", "default"] {
                let k = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &k]);
            }
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "link",
            "add",
            "ct0",
            "netns",
            &a,
            "address",
            "02:00:00:00:79:01",
            "type",
            "veth",
            "peer",
            "name",
            "ct1",
            "netns",
            &b,
            "address",
            "02:00:00:00:79:02",
        ]);
        for (ns, dev, me, peer, mac) in [
            (&a, "ct0", "10.79.0.1/24", "10.79.0.2", "02:00:00:00:79:02"),
            (&b, "ct1", "10.79.0.2/24", "10.79.0.1", "02:00:00:00:79:01"),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", me, "dev", dev]);
            sh(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "add",
                peer,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // Conntrack on in a (a rule that uses it) with accounting.
        sh(&[
            "ip", "netns", "exec", &a, "nft", "add", "table", "inet", "flk",
        ]);
        let chain = "{ type filter hook output priority 0; }";
        sh(&[
            "ip", "netns", "exec", &a, "nft", "add", "chain", "inet", "flk", "out", chain,
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &a,
            "nft",
            "add",
            "rule",
            "inet",
            "flk",
            "out",
            "ct",
            "state",
            "new,established",
            "accept",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &a,
            "sysctl",
            "-qw",
            "net.netfilter.nf_conntrack_acct=1",
        ]);
        // `ip netns exec` gives it a sysfs of a's: /proc/<pid>/root/sys shows a's devices.
        let resident = Command::new("ip")
            .args(["netns", "exec", &a, "sleep", "600"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        lab.resident = Some(resident);
        lab
    }

    fn path(ns: &str) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{ns}"))
    }

    fn proc_root(&self) -> PathBuf {
        let pid = self.resident.as_ref().expect("resident").id();
        PathBuf::from(format!("/proc/{pid}"))
    }

    /// ct0's counters as netlink reports them.
    fn link_stats(&self) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["-n", &self.a, "-s", "-j", "link", "show", "ct0"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["stats64"].clone()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(r) = &mut self.resident {
            let _ = r.kill();
            let _ = r.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A transfer a → b (and a reply) on one connection, closed; and `OPEN`
/// connections to port 7001 left open (returned, with their server ends).
fn traffic(lab: &Lab) -> Vec<TcpStream> {
    let (t, o): (SocketAddr, SocketAddr) = (
        "10.79.0.2:7000".parse().unwrap(),
        "10.79.0.2:7001".parse().unwrap(),
    );
    let (lt, lo) = in_netns(Lab::path(&lab.b), move || {
        (TcpListener::bind(t).unwrap(), TcpListener::bind(o).unwrap())
    })
    .join()
    .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = lt.accept().unwrap();
        let mut got = vec![0u8; TRANSFER];
        s.read_exact(&mut got).unwrap();
        s.write_all(&vec![1u8; REPLY]).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        drop(s);
        let kept: Vec<TcpStream> = (0..OPEN).map(|_| lo.accept().unwrap().0).collect();
        kept
    });
    let mut kept = in_netns(Lab::path(&lab.a), move || {
        let mut s = TcpStream::connect_timeout(&t, Duration::from_secs(5)).unwrap();
        s.write_all(&vec![7u8; TRANSFER]).unwrap();
        let mut back = vec![0u8; REPLY];
        s.read_exact(&mut back).unwrap();
        drop(s);
        (0..OPEN)
            .map(|_| TcpStream::connect_timeout(&o, Duration::from_secs(5)).unwrap())
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    kept.extend(server.join().unwrap());
    kept
}

async fn scraped(prom: &Prometheus, promql: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = prom.value(promql).await {
            return v;
        }
        assert!(Instant::now() < deadline, "{promql}: no sample");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_sources_equal_the_kernels_counters() {
    if !privileged() {
        return;
    }
    let require = std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prom = match Prometheus::start(listener.local_addr().unwrap()) {
        Ok(p) => p,
        Err(reason) if !require => {
            eprintln!("skipped: {reason} (set FLOWLAKE_REQUIRE_PRIVILEGED=1 to fail instead)");
            return;
        }
        Err(reason) => panic!("{reason}"),
    };
    let lab = tokio::task::spawn_blocking(Lab::new).await.unwrap();
    let before = lab.link_stats();
    let lab = Arc::new(lab);
    let l = lab.clone();
    let _kept = tokio::task::spawn_blocking(move || traffic(&l))
        .await
        .unwrap();
    // Quiet from here (the last ACKs and FINs settle): no more packets on ct0.
    let mut after = lab.link_stats();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = lab.link_stats();
        if now == after {
            break;
        }
        after = now;
    }

    let mut cfg = RetinaConfig::for_tests(lab.proc_root());
    cfg.sys_root = lab.proc_root().join("root/sys");
    let mut registry = Registry::default();
    RetinaMetrics::register(&mut registry, &cfg, LossSources::default(), system_clock());
    let shutdown = CancellationToken::new();
    let http = tokio::spawn(serve(
        listener,
        router(Arc::new(registry)),
        shutdown.clone(),
    ));

    for source in ["interface_stats", "conntrack", "tcp_connection_remote"] {
        let on =
            format!(r#"flowlake_collector_plugin_status{{plugin="{source}",state="enabled"}}"#);
        assert_eq!(scraped(&prom, &on).await, 1.0, "{on}");
    }

    // interface_stats: every counter of ct0 equals netlink's.
    for (stat, key) in [
        ("rx_bytes", &after["rx"]["bytes"]),
        ("rx_packets", &after["rx"]["packets"]),
        ("tx_bytes", &after["tx"]["bytes"]),
        ("tx_packets", &after["tx"]["packets"]),
        ("rx_dropped", &after["rx"]["dropped"]),
        ("tx_errors", &after["tx"]["errors"]),
    ] {
        let q = format!(
            r#"networkobservability_interface_stats{{interface_name="ct0",statistic_name="{stat}"}}"#
        );
        assert_eq!(Some(scraped(&prom, &q).await), key.as_f64(), "{q}");
    }

    // conntrack: the veth carried exactly the tracked connections' packets.
    let delta = |dir: &str, what: &str| {
        after[dir][what].as_f64().unwrap() - before[dir][what].as_f64().unwrap()
    };
    let (tx_pkts, rx_pkts) = (delta("tx", "packets"), delta("rx", "packets"));
    assert!(tx_pkts > 0.0 && rx_pkts > 0.0);
    let ct = |m: &str| format!("networkobservability_conntrack_{m}");
    assert_eq!(scraped(&prom, &ct("packets_tx")).await, tx_pkts);
    assert_eq!(scraped(&prom, &ct("packets_rx")).await, rx_pkts);
    let tx_bytes = delta("tx", "bytes") - 14.0 * tx_pkts;
    let rx_bytes = delta("rx", "bytes") - 14.0 * rx_pkts;
    assert_eq!(scraped(&prom, &ct("bytes_tx")).await, tx_bytes);
    assert_eq!(scraped(&prom, &ct("bytes_rx")).await, rx_bytes);
    assert!(tx_bytes > TRANSFER as f64 && rx_bytes > REPLY as f64);
    assert_eq!(
        scraped(&prom, &ct("total_connections")).await,
        (1 + OPEN) as f64,
        "the transfer (closed, still tracked) and the open connections"
    );

    // tcp_connection_remote: the open connections to 10.79.0.2:7001.
    let q = r#"networkobservability_tcp_connection_remote{address="10.79.0.2",port="7001"}"#;
    assert_eq!(scraped(&prom, q).await, OPEN as f64);

    assert_eq!(lab.link_stats(), after, "ct0 stayed quiet while scraped");

    shutdown.cancel();
    http.await.unwrap().unwrap();
}

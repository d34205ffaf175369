//! An interface without a link-layer header: two TUN devices, one in the node
//! namespace and one in a pod namespace, joined by a userspace relay (a VPN
//! or wireguard tunnel in miniature). The flow programs on the node's TUN
//! parse from the IP header; counts equal tcpdump's on that interface.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowlake_collector::{Datapath, DatapathConfig, DatapathMetrics};
use flowlake_schemas::ObservationPoint;
use prometheus_client::registry::Registry;

use super::harness::*;
use super::rtt::open_tun;
use super::talkers::tcp_transfer_between;

/// Copies packets between two TUN devices until `stop`.
fn relay(a: OwnedFd, b: OwnedFd, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, 20) };
        for (from, to) in [(&a, &b), (&b, &a)] {
            loop {
                // SAFETY: valid buffer; non-blocking fd.
                let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                // SAFETY: n bytes of buf were just read.
                unsafe { libc::write(to.as_raw_fd(), buf.as_ptr().cast(), n as usize) };
            }
        }
    }
}

/// A TUN device named `name` in the namespace at `ns`, with addresses, up.
fn tun_in(ns: &str, name: &'static str, v4: &str, v6: &str) -> OwnedFd {
    let fd = in_netns(PathBuf::from(format!("/var/run/netns/{ns}")), move || {
        open_tun(name)
    })
    .join()
    .unwrap();
    for args in [
        vec!["addr", "add", v4, "dev", name],
        vec!["addr", "add", v6, "dev", name, "nodad"],
        vec!["link", "set", name, "up"],
    ] {
        let mut v = vec!["ip", "-n", ns];
        v.extend(args);
        sh(&v);
    }
    fd
}

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn tun_traffic_counted_exactly() {
    if !privileged() {
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        // The module may just not be loaded yet.
        let _ = Command::new("modprobe").arg("tun").output();
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        if std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
            panic!("no /dev/net/tun");
        }
        eprintln!("skipped: no /dev/net/tun");
        return;
    }
    let t = Topology::new(20, 0);
    let node = t.node_ns();
    let pod = Namespace(format!("{}t", t.id));
    sh(&["ip", "netns", "add", &pod.0]);
    let node_tun = tun_in(&node, "flkt0", "10.77.20.1/24", "fd77:20::1/64");
    let pod_tun = tun_in(&pod.0, "flkt1", "10.77.20.2/24", "fd77:20::2/64");
    let stop = Arc::new(AtomicBool::new(false));
    let relaying = {
        let stop = stop.clone();
        std::thread::spawn(move || relay(node_tun, pod_tun, stop))
    };

    let dir = tempfile::tempdir().unwrap();
    let caps = vec![
        (
            ObservationPoint::FromNetwork,
            Capture::start(&node, "flkt0", "in", dir.path().join("in.pcap")),
        ),
        (
            ObservationPoint::ToNetwork,
            Capture::start(&node, "flkt0", "out", dir.path().join("out.pcap")),
        ),
    ];
    let mut registry = Registry::default();
    let metrics = DatapathMetrics::new(&mut registry);
    let config = DatapathConfig {
        netns: Some(t.node_ns_path()),
        node_interfaces: vec!["flkt0".into()],
        active_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        ..DatapathConfig::for_tests()
    };
    let (dp, rx) = Datapath::start(config, metrics).expect("start datapath");
    assert_eq!(dp.interfaces(), vec!["flkt0".to_string()]);

    // TCP from the pod to the node, UDP and ICMP both ways of addressing.
    let server: SocketAddr = "10.77.20.1:5301".parse().unwrap();
    let pod_path = PathBuf::from(format!("/var/run/netns/{}", pod.0));
    let sent = tcp_transfer_between(pod_path.clone(), t.node_ns_path(), server, 300_000);
    assert_eq!(sent, 300_000);
    in_netns(pod_path.clone(), || {
        let s = UdpSocket::bind("[::]:0").unwrap();
        for n in [1usize, 200, 1200] {
            s.send_to(&vec![1u8; n], "[fd77:20::1]:5302").unwrap();
        }
    })
    .join()
    .unwrap();
    ping_from(pod_path, "10.77.20.1".parse().unwrap(), 3);

    let records = finish(dp, rx);
    stop.store(true, Ordering::Relaxed);
    relaying.join().unwrap();
    let got = totals(&records);
    let ours = |ip: IpAddr| {
        ip.to_string().starts_with("10.77.20.") || ip.to_string().starts_with("fd77:20::")
    };
    let compared = assert_equal_captures(caps, &got, |tu| ours(tu.0) && ours(tu.1));
    // TCP both ways, UDP one way, ICMP both ways.
    assert!(compared >= 5, "only {compared} flows compared: {got:?}");
    // The transfer itself, parsed from the IP header: its bytes all counted.
    let tcp_bytes: u64 = got
        .iter()
        .filter(|((tu, p), _)| tu.3 == 5301 && *p == ObservationPoint::FromNetwork)
        .map(|(_, (_, bytes))| bytes)
        .sum();
    assert!(tcp_bytes > 300_000, "TCP flow over the TUN device: {got:?}");
}

//! TCP health and resets on exactly one row, the sending socket's (a pod's
//! `from_pod`, a node socket's `to_network`), checked against the kernel's
//! own counters and tcpdump: on one node, across two node namespaces joined
//! by an uplink the collector observes as a node interface (so a pod's
//! address is seen there too, as with native routing), and for a socket of
//! the node itself.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use flowlake_collector::{Datapath, DatapathMetrics};
use flowlake_schemas::{FlowRecord, ObservationPoint, Protocol};

use super::harness::*;

/// Two node namespaces joined by a veth (`upa` ↔ `upb`), each end a port of
/// a bridge `uplink` holding the node's address (192.168.<a>.1 and .2): the
/// collector observes `uplink` as a node interface and ignores the veth. Pods
/// route through their node (10.77.<s>.1 on br0).
struct Uplink;

impl Uplink {
    fn node_addr(a: &Topology, which: u8) -> String {
        format!("192.168.{}.{which}", a.subnet)
    }

    /// A node with three pods (subnet `s`) joined to one with one pod (`s + 1`).
    fn nodes(s: u8) -> (Topology, Topology) {
        let (t, u) = (Topology::new(s, 3), Topology::new(s + 1, 1));
        Self::join(&t, &u);
        (t, u)
    }

    fn join(a: &Topology, b: &Topology) {
        let (na, nb) = (a.node_ns(), b.node_ns());
        sh(&[
            "ip", "link", "add", "upa", "netns", &na, "type", "veth", "peer", "name", "upb",
            "netns", &nb,
        ]);
        for (t, port, which) in [(a, "upa", 1u8), (b, "upb", 2u8)] {
            t.node(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            t.node(&["ip", "link", "add", "uplink", "type", "bridge"]);
            t.node(&["ip", "link", "set", port, "master", "uplink"]);
            t.node(&["ip", "link", "set", port, "up"]);
            t.node(&["ip", "link", "set", "uplink", "up"]);
            let addr = format!("{}/24", Self::node_addr(a, which));
            t.node(&["ip", "addr", "add", &addr, "dev", "uplink"]);
            let gw = format!("10.77.{}.1", t.subnet);
            t.node(&["ip", "addr", "add", &format!("{gw}/24"), "dev", "br0"]);
            for i in 0..t.pods.len() {
                t.in_pod(i, &["ip", "route", "add", "default", "via", &gw]);
            }
        }
        let (to_b, to_a) = (
            format!("10.77.{}.0/24", b.subnet),
            format!("10.77.{}.0/24", a.subnet),
        );
        a.node(&["ip", "route", "add", &to_b, "via", &Self::node_addr(a, 2)]);
        b.node(&["ip", "route", "add", &to_a, "via", &Self::node_addr(a, 1)]);
    }

    /// A collector on `t`'s node observing `uplink` as its node interface.
    fn collector(
        t: &Topology,
        veth: &str,
    ) -> (
        Datapath,
        tokio::sync::mpsc::Receiver<Vec<FlowRecord>>,
        DatapathMetrics,
    ) {
        let veth = veth.to_string();
        t.collector_configured(move |c| {
            c.node_interfaces = vec!["uplink".into()];
            c.exclude = vec![veth];
        })
    }
}

fn retrans(ns: &str) -> u64 {
    Topology::snmp(ns, "Tcp", "RetransSegs")
}

/// Waits until no socket in `ns` can still retransmit (every connection
/// closed or in a state without unacknowledged data), so the kernel's count
/// is final before it is read.
fn settle(ns: &str) {
    for _ in 0..200 {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", ns, "ss", "-Htn", "state", "syn-sent", "state",
            ])
            .args(["established", "state", "fin-wait-1", "state", "closing"])
            .args(["state", "last-ack"])
            .output()
            .expect("ss");
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("connections in {ns} still open");
}

/// Every tenth segment to `port` (from the sixth) dropped on input in pod
/// `i`: a deterministic loss the sender retransmits.
fn lossy(t: &Topology, i: usize, port: u16) {
    let port = port.to_string();
    let rule = ["tcp", "dport", &port, "numgen", "inc", "mod", "10", "5"];
    t.drop_input_in_pod(i, &rule);
}

/// 20 ms on pod `i`'s way out when the kernel has sch_netem.
fn delay(ns: &str) -> bool {
    std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root",
        ])
        .args(["netem", "delay", "20ms"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn rows_of(records: &[FlowRecord], src: IpAddr, port: u16) -> Vec<&FlowRecord> {
    records
        .iter()
        .filter(|r| r.src.ip == src && r.dst.port == Some(port) && r.protocol == Protocol::Tcp)
        .collect()
}

/// Checks one sender's flow: health only on the row at `point`, its
/// retransmits equal to `kernel`, srtt and handshake there too.
fn assert_health_on(
    rows: &[&FlowRecord],
    point: ObservationPoint,
    kernel: u64,
    netem: bool,
    what: &str,
) {
    assert!(kernel > 0, "{what}: the loss caused no retransmit");
    let (on, off): (Vec<&FlowRecord>, Vec<&FlowRecord>) = rows
        .iter()
        .copied()
        .partition(|r| r.observation_point == point);
    assert!(
        off.iter().all(|r| r.tcp.is_none()),
        "{what}: health off the sending row: {off:#?}"
    );
    assert!(on.iter().any(|r| r.packets > 0), "{what}: no {point} row");
    let got: u64 = on
        .iter()
        .filter_map(|r| r.tcp)
        .map(|h| u64::from(h.retransmits))
        .sum();
    assert_eq!(
        got, kernel,
        "{what}: retransmits vs TcpRetransSegs: {on:#?}"
    );
    let srtt = on.iter().filter_map(|r| r.tcp?.srtt_us).max();
    let hs = on.iter().filter_map(|r| r.tcp?.handshake_us).max();
    let least = if netem { 20_000 } else { 1 };
    assert!(
        srtt.is_some_and(|s| s >= least && s < 1_000_000),
        "{what}: srtt {srtt:?}"
    );
    assert!(hs.is_some_and(|h| h >= least), "{what}: handshake {hs:?}");
    let handshakes = rows
        .iter()
        .filter(|r| r.tcp.is_some_and(|h| h.handshake_us.is_some()));
    assert_eq!(
        handshakes.count(),
        1,
        "{what}: handshake on one row: {rows:#?}"
    );
}

#[test]
fn retransmits_equal_the_kernel_count_on_the_sending_row() {
    if !privileged() {
        return;
    }
    let (t, u) = Uplink::nodes(21);
    // Losses on input of each receiver, delay on each receiver's way back.
    lossy(&t, 1, 5201);
    lossy(&u, 0, 5202);
    lossy(&u, 0, 5203);
    let netem = delay(&t.pods[1].ns) && delay(&u.pods[0].ns);
    if !netem {
        eprintln!("no sch_netem in this kernel: srtt and handshake checked without added delay");
    }
    let (dp, rx, _m) = Uplink::collector(&t, "upa");
    let (p0, p2, remote) = (t.pods[0].v4, t.pods[2].v4, u.pods[0].v4);
    let node = Uplink::node_addr(&t, 1).parse::<IpAddr>().unwrap();
    let before = [&t.pods[0].ns, &t.pods[2].ns, &t.node_ns()].map(|ns| retrans(ns));
    let size = 1 << 20;
    // A pod to a pod of the same node; a pod to a pod of the other node
    // (seen at from_pod and at the node interface); the node itself.
    let (same, cross, own) = (
        SocketAddr::new(t.pods[1].v4, 5201),
        SocketAddr::new(remote, 5202),
        SocketAddr::new(remote, 5203),
    );
    assert_eq!(
        super::talkers::tcp_transfer(&t, 0, t.pod_ns_path(1), same, size),
        size as u64
    );
    assert_eq!(
        super::talkers::tcp_transfer(&t, 2, u.pod_ns_path(0), cross, size),
        size as u64
    );
    let got = super::talkers::tcp_transfer_between(t.node_ns_path(), u.pod_ns_path(0), own, size);
    assert_eq!(got, size as u64);
    for ns in [&t.pods[0].ns, &t.pods[2].ns, &t.node_ns()] {
        settle(ns);
    }
    let after = [&t.pods[0].ns, &t.pods[2].ns, &t.node_ns()].map(|ns| retrans(ns));
    let records = finish(dp, rx);

    let same_rows = rows_of(&records, p0, 5201);
    assert_health_on(
        &same_rows,
        ObservationPoint::FromPod,
        after[0] - before[0],
        netem,
        "same node",
    );
    let cross_rows = rows_of(&records, p2, 5202);
    assert!(
        cross_rows
            .iter()
            .any(|r| r.observation_point == ObservationPoint::ToNetwork),
        "the pod address is seen on the node interface: {cross_rows:#?}"
    );
    assert_health_on(
        &cross_rows,
        ObservationPoint::FromPod,
        after[1] - before[1],
        netem,
        "cross node",
    );
    let own_rows = rows_of(&records, node, 5203);
    assert_health_on(
        &own_rows,
        ObservationPoint::ToNetwork,
        after[2] - before[2],
        netem,
        "node socket",
    );
    // The receivers' sockets (their FIN may be lost too: the rule drops
    // the senders' ACKs of it) have health only on their own from_pod rows.
    for (src, port) in [(t.pods[1].v4, 5201), (remote, 5202), (remote, 5203)] {
        let back: Vec<_> = records
            .iter()
            .filter(|r| r.src.ip == src && r.src.port == Some(port) && r.tcp.is_some())
            .filter(|r| r.observation_point != ObservationPoint::FromPod)
            .collect();
        assert!(back.is_empty(), "{back:#?}");
    }
}

/// Closes a connection with SO_LINGER 0: the socket sends a reset.
fn abort(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket and option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
}

/// From the pod at `client`: `refused` connections to a closed port of
/// `server` (each answered by one reset without a socket), then one
/// connection the client aborts and one the server aborts (a reset from a
/// socket each way).
fn resets_between(
    client: std::path::PathBuf,
    server_ns: std::path::PathBuf,
    server: IpAddr,
    refused: usize,
) {
    let listener = in_netns(server_ns, move || {
        TcpListener::bind((server, 7100)).unwrap()
    })
    .join()
    .unwrap();
    let acceptor = std::thread::spawn(move || {
        let (mut a, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        // The client aborts: its reset ends the read.
        let _ = a.read(&mut b);
        let (s, _) = listener.accept().unwrap();
        abort(s);
    });
    in_netns(client, move || {
        for _ in 0..refused {
            let e = TcpStream::connect_timeout(&(server, 7101).into(), Duration::from_secs(2));
            assert!(e.is_err());
        }
        let to = SocketAddr::new(server, 7100);
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        abort(s);
        // The server aborts: its reset ends the read (or the connect, when
        // it comes first).
        if let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            let _ = s.read(&mut [0u8; 1]);
        }
    })
    .join()
    .unwrap();
    acceptor.join().unwrap();
}

/// Resets per tuple on the rows of `records`, and where else any showed.
fn resets_by_row(records: &[FlowRecord]) -> (HashMap<Tuple, u64>, Vec<&FlowRecord>) {
    let mut sent: HashMap<Tuple, u64> = HashMap::new();
    let mut elsewhere = Vec::new();
    for r in records {
        let Some(h) = r.tcp.filter(|h| h.resets > 0) else {
            continue;
        };
        if r.observation_point != ObservationPoint::FromPod {
            elsewhere.push(r);
            continue;
        }
        let t = (
            r.src.ip,
            r.dst.ip,
            r.src.port.unwrap(),
            r.dst.port.unwrap(),
            6,
        );
        *sent.entry(t).or_default() += u64::from(h.resets);
    }
    (sent, elsewhere)
}

#[test]
fn resets_counted_once_on_the_sending_pod_row() {
    if !privileged() {
        return;
    }
    let (t, u) = Uplink::nodes(23);
    let dir = tempfile::tempdir().unwrap();
    let mut caps = t.capture_pods(dir.path(), "t");
    caps.extend(u.capture_pods(dir.path(), "u"));
    let (dp_t, rx_t, _) = Uplink::collector(&t, "upa");
    let (dp_u, rx_u, _) = Uplink::collector(&u, "upb");
    // Same node: pod 0 and pod 1; across nodes: pod 2 and the other node's pod.
    resets_between(t.pod_ns_path(0), t.pod_ns_path(1), t.pods[1].v4, 3);
    resets_between(t.pod_ns_path(2), u.pod_ns_path(0), u.pods[0].v4, 2);
    let mut records = finish(dp_t, rx_t);
    records.extend(finish(dp_u, rx_u));

    // tcpdump's resets leaving each pod (from_pod captures).
    let mut truth: HashMap<Tuple, u64> = HashMap::new();
    for (point, cap) in caps {
        let counted = cap.stop_resets();
        if point == ObservationPoint::FromPod {
            truth.extend(counted);
        }
    }
    let (got, elsewhere) = resets_by_row(&records);
    assert!(
        elsewhere.is_empty(),
        "resets off the sending rows: {elsewhere:#?}"
    );
    assert_eq!(got, truth, "resets per flow: collector vs tcpdump");
    // What was sent: the refused connections and one abort each way.
    let from = |ip: IpAddr| {
        truth
            .iter()
            .filter(|(k, _)| k.0 == ip)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(from(t.pods[1].v4), 3 + 1);
    assert_eq!(from(t.pods[0].v4), 1);
    assert_eq!(from(u.pods[0].v4), 2 + 1);
    assert_eq!(from(t.pods[2].v4), 1);
}

//! Talker counting on one node: a pod-to-pod flow is seen twice (leaving the
//! sender, entering the receiver); the documented count-once rule
//! (docs/schema.md) keeps exactly one of them.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use flowlake_collector::enrich::{EnrichMetrics, Enricher};
use flowlake_schemas::{FlowRecord, ObservationPoint};
use prometheus_client::registry::Registry;

use super::harness::*;

/// Sends `bytes` over TCP from pod `from` to a listener in the namespace at
/// `to_ns` on `to`; returns what the listener received.
pub fn tcp_transfer(
    t: &Topology,
    from: usize,
    to_ns: std::path::PathBuf,
    to: SocketAddr,
    bytes: usize,
) -> u64 {
    tcp_transfer_between(t.pod_ns_path(from), to_ns, to, bytes)
}

/// `tcp_transfer` from the namespace at `from_ns`.
pub fn tcp_transfer_between(
    from_ns: std::path::PathBuf,
    to_ns: std::path::PathBuf,
    to: SocketAddr,
    bytes: usize,
) -> u64 {
    let listener = in_netns(to_ns, move || TcpListener::bind(to).unwrap())
        .join()
        .unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len() as u64
    });
    in_netns(from_ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.write_all(&vec![3u8; bytes]).unwrap();
    })
    .join()
    .unwrap();
    sink.join().unwrap()
}

/// The count-once rule of docs/schema.md on typed records.
fn counted_once(r: &FlowRecord) -> bool {
    let src_pod = r.src.identity.as_ref().and_then(|i| i.pod.as_ref());
    r.observation_point == ObservationPoint::FromPod
        || (r.observation_point == ObservationPoint::ToPod && src_pod.is_none())
}

#[test]
fn same_node_pod_to_pod_flow_counted_once_in_talkers() {
    if !privileged() {
        return;
    }
    let t = Topology::new(16, 2);
    let node_ip: IpAddr = "10.77.16.1".parse().unwrap();
    t.node(&["ip", "addr", "add", "10.77.16.1/24", "dev", "br0"]);
    let (a, b) = (t.pods[0].v4, t.pods[1].v4);
    let dir = tempfile::tempdir().unwrap();
    let identities = dir.path().join("identities.yaml");
    std::fs::write(
        &identities,
        format!(
            "- {{ip: {a}, namespace: shop, pod: client-0}}\n- {{ip: {b}, namespace: shop, pod: server-0}}\n"
        ),
    )
    .unwrap();
    let enricher = Enricher::from_static_file(
        &identities,
        EnrichMetrics::register(&mut Registry::default()),
    )
    .unwrap();

    // Every packet of pod B's traffic crosses B's host-side veth once.
    let cap = Capture::start(
        &t.node_ns(),
        &t.pods[1].host_if,
        "inout",
        dir.path().join("b.pcap"),
    );
    let (dp, rx, _m) = t.collector();
    let sent = 300_000;
    assert_eq!(
        tcp_transfer(&t, 0, t.pod_ns_path(1), SocketAddr::new(b, 5201), sent),
        sent as u64
    );
    // A non-pod sender (the node itself) to pod B: counted as it enters B.
    in_netns(t.node_ns_path(), move || {
        let s = UdpSocket::bind("10.77.16.1:0").unwrap();
        for n in [10usize, 200, 1200] {
            s.send_to(&vec![0u8; n], SocketAddr::new(b, 5202)).unwrap();
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut records = finish(dp, rx);
    let captured = cap.stop();
    enricher.enrich_all(&mut records);

    let in_test = |ip: IpAddr| ip == a || ip == b || ip == node_ip;
    let records: Vec<FlowRecord> = records
        .into_iter()
        .filter(|r| in_test(r.src.ip) && in_test(r.dst.ip))
        .collect();
    let captured: Vec<_> = captured
        .into_iter()
        .filter(|(tu, _)| in_test(tu.0) && in_test(tu.1))
        .collect();

    // The pod-to-pod data direction is reported at both points, with the same totals.
    let all = totals(&records);
    let data = |p| {
        all.iter()
            .filter(|((tu, point), _)| tu.0 == a && tu.3 == 5201 && *point == p)
            .map(|(_, v)| *v)
            .next()
            .unwrap_or_else(|| panic!("no {p} row for the transfer"))
    };
    let (from, to) = (
        data(ObservationPoint::FromPod),
        data(ObservationPoint::ToPod),
    );
    assert_eq!(from, to, "from_pod and to_pod saw the same packets");
    assert!(from.1 > sent as u64);
    let to_row = records
        .iter()
        .find(|r| r.src.ip == a && r.observation_point == ObservationPoint::ToPod)
        .unwrap();
    assert_eq!(
        to_row.src.identity.as_ref().and_then(|i| i.pod.as_deref()),
        Some("client-0"),
        "enriched source pod"
    );

    // Count once: per flow, what the capture of B's veth saw exactly once.
    let once: Vec<FlowRecord> = records
        .iter()
        .filter(|r| counted_once(r))
        .cloned()
        .collect();
    let mut per_flow = std::collections::HashMap::<Tuple, (u64, u64)>::new();
    for ((tu, _), v) in totals(&once) {
        let e = per_flow.entry(tu).or_default();
        e.0 += v.0;
        e.1 += v.1;
    }
    let want: std::collections::HashMap<Tuple, (u64, u64)> = captured.into_iter().collect();
    assert_eq!(per_flow, want, "count-once totals vs one capture");
    assert!(
        want.keys().any(|tu| tu.0 == node_ip && tu.3 == 5202),
        "the node's datagrams were captured and counted at to_pod"
    );
    // Without the rule the transfer would be counted twice.
    let naive: u64 = all.values().map(|v| v.1).sum();
    let once_bytes: u64 = per_flow.values().map(|v| v.1).sum();
    assert!(naive >= once_bytes + from.1);
}

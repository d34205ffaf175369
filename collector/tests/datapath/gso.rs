//! Wire packets: a GSO super-packet counts its segments in `wire_packets`
//! and once in `packets`; the truth is the sending namespace's own TCP MIB.

use std::net::SocketAddr;

use flowlake_schemas::{FlowRecord, ObservationPoint, Protocol};

use super::harness::*;
use super::tests::{tcp_send, tcp_sink};

/// Segments the TCP stack of `ns` has put on the wire: `OutSegs` counts
/// every segment sent but those carrying only retransmitted bytes, which
/// `RetransSegs` counts (both in segments: `tcp_skb_pcount`, the
/// `gso_segs` of the buffer).
fn segments_sent(ns: &str) -> u64 {
    Topology::snmp(ns, "Tcp", "OutSegs") + Topology::snmp(ns, "Tcp", "RetransSegs")
}

/// `(packets, wire_packets)` summed over the TCP rows from `src` at `point`.
fn counted(records: &[FlowRecord], src: &Pod, point: ObservationPoint) -> (u64, u64) {
    records
        .iter()
        .filter(|r| r.protocol == Protocol::Tcp && r.src.ip == src.v4)
        .filter(|r| r.observation_point == point)
        .fold((0, 0), |(p, w), r| {
            let wire = r.wire_packets.expect("flow rows count wire packets");
            (p + r.packets, w + wire)
        })
}

/// A bulk TCP transfer between two pods over veths with TSO on (their
/// default): the sender's stack hands 64 KiB buffers to the veth, which
/// passes them on unsegmented. On each side, the sending pod's `from_pod`
/// wire packets equal the segments its namespace's TCP sent (the only
/// connection there), the receiving pod's `to_pod` row sees the same
/// buffers, and fewer buffers than segments prove super-packets were seen.
#[test]
fn wire_packets_count_gso_segments() {
    if !privileged() {
        return;
    }
    let t = Topology::new(33, 2);
    let (a, b) = (&t.pods[0], &t.pods[1]);
    let before = (segments_sent(&a.ns), segments_sent(&b.ns));
    let (dp, rx, _metrics) = t.collector();
    let sink = tcp_sink(&t, 1, SocketAddr::new(b.v4, 5001));
    tcp_send(&t, 0, SocketAddr::new(b.v4, 5001), 16 << 20);
    assert_eq!(sink.join().unwrap(), 16 << 20);
    // Both sockets closed (the sender waited for the peer's FIN): nothing
    // more leaves either namespace.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = (
        segments_sent(&a.ns) - before.0,
        segments_sent(&b.ns) - before.1,
    );
    let records = finish(dp, rx);

    let (a_packets, a_wire) = counted(&records, a, ObservationPoint::FromPod);
    let (b_packets, b_wire) = counted(&records, b, ObservationPoint::FromPod);
    eprintln!(
        "sender: {a_packets} buffers, {a_wire} wire packets, {} segments sent; \
         receiver: {b_packets} buffers, {b_wire} wire packets, {} segments sent",
        sent.0, sent.1
    );
    assert_eq!(a_wire, sent.0, "sender's wire packets = its TCP segments");
    assert_eq!(b_wire, sent.1, "receiver's wire packets = its TCP segments");
    assert!(
        a_packets < a_wire,
        "super-packets seen: {a_packets} buffers carried {a_wire} segments"
    );
    assert_eq!(
        counted(&records, a, ObservationPoint::ToPod),
        (a_packets, a_wire),
        "the receiving pod's to_pod row sees the same buffers"
    );
}

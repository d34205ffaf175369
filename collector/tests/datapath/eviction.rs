//! Evictions while packets flow: the flow programs count in a per-CPU cache
//! in front of the flows hash; active and idle evictions switch its bank and
//! take both. Packets and bytes summed over every record of a flow must still
//! equal the capture exactly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use flowlake_schemas::ObservationPoint;

use super::harness::*;

#[test]
fn evictions_during_traffic_stay_exact() {
    if !privileged() {
        return;
    }
    let t = Topology::new(18, 2);
    let dir = tempfile::tempdir().unwrap();
    let caps = t.capture_pods(dir.path(), "e");
    // Active eviction every 1.2 s; idle scans every 200 ms evict flows idle
    // for 400 ms.
    let (dp, rx, metrics) =
        t.collector_with(Duration::from_millis(1200), Duration::from_millis(400));
    let b_v4 = t.pods[1].v4;

    // A TCP stream paced over ~3 s (spans active evictions), and a UDP flow
    // with a 1 s pause in the middle (evicted idle, then counted again).
    let tcp_to = SocketAddr::new(b_v4, 5101);
    let sink = in_netns(t.pod_ns_path(1), move || {
        let l = TcpListener::bind(tcp_to).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        while let Ok(n @ 1..) = s.read(&mut buf) {
            total += n as u64;
        }
        total
    });
    std::thread::sleep(Duration::from_millis(200));
    let tcp = in_netns(t.pod_ns_path(0), move || {
        let mut s = TcpStream::connect_timeout(&tcp_to, Duration::from_secs(5)).unwrap();
        for _ in 0..60 {
            s.write_all(&[3u8; 20_000]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    });
    let udp_to = SocketAddr::new(b_v4, 5102);
    let udp = in_netns(t.pod_ns_path(0), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for burst in 0..2 {
            for i in 0..40 {
                s.send_to(&vec![1u8; 10 + i * 7], udp_to).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            if burst == 0 {
                std::thread::sleep(Duration::from_millis(1000));
            }
        }
    });
    tcp.join().unwrap();
    udp.join().unwrap();
    assert_eq!(sink.join().unwrap(), 60 * 20_000);
    std::thread::sleep(Duration::from_millis(300));

    let records = finish(dp, rx);
    assert!(
        metrics.evicted_count("active") > 0,
        "no active eviction ran"
    );
    assert!(metrics.evicted_count("idle") > 0, "no idle eviction ran");
    let got = totals(&records);
    let rows = |port: u16| {
        records
            .iter()
            .filter(|r| {
                r.dst.port == Some(port) && r.observation_point == ObservationPoint::FromPod
            })
            .count()
    };
    assert!(rows(5101) >= 2, "TCP flow not split by evictions");
    assert!(rows(5102) >= 2, "UDP flow not split by the idle eviction");
    let compared = assert_equal_captures(caps, &got, |tu| {
        tu.2 == 5101 || tu.3 == 5101 || tu.3 == 5102
    });
    assert!(compared >= 6, "only {compared} flows compared");
}

/// A flow map of four entries flooded with flows: every packet the map
/// could not take is counted lost, with its bytes, so the collector's
/// packets plus the losses equal the capture exactly.
#[test]
fn full_flow_map_losses_are_exactly_what_is_missing() {
    if !privileged() {
        return;
    }
    let t = Topology::new(19, 2);
    // No spontaneous traffic (IPv6 router solicitations and MLD, the
    // bridge's IGMP reports) between the captures' start and the
    // collector's: every captured IP packet is one it saw or lost. The
    // reports of the links' start end within a few seconds.
    let off = "net.ipv6.conf.all.disable_ipv6=1";
    for i in 0..2 {
        t.in_pod(i, &["sysctl", "-qw", off]);
    }
    t.node(&["sysctl", "-qw", off]);
    std::thread::sleep(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let caps = t.capture_pods(dir.path(), "f");
    let (dp, rx, metrics) = t.collector_configured(|c| c.flow_map_entries = 4);
    let to = t.pods[1].v4;
    // 80 flows (closed ports: each answered by an ICMP error, 160 keys per
    // observation point), three packets each.
    in_netns(t.pod_ns_path(0), move || {
        for port in 0..80u16 {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..3 {
                let _ = s.send_to(&[9u8; 64], SocketAddr::new(to, 20000 + port));
            }
        }
    })
    .join()
    .unwrap();
    let records = finish(dp, rx);
    let got = totals(&records);
    let (mut cap_pkts, mut cap_bytes) = (0u64, 0u64);
    for (point, cap) in caps {
        for (tuple, (p, b)) in cap.stop() {
            let (gp, gb) = got.get(&(tuple, point)).copied().unwrap_or_default();
            assert!(
                gp <= p && gb <= b,
                "{tuple:?} at {point}: more than captured"
            );
            cap_pkts += p;
            cap_bytes += b;
        }
    }
    let (seen_pkts, seen_bytes) = got
        .values()
        .fold((0, 0), |(p, b), (gp, gb)| (p + gp, b + gb));
    let lost = metrics.lost_count(flowlake_collector::metrics::LossKind::FlowMapFull);
    let lost_bytes = metrics
        .lost_bytes(flowlake_collector::metrics::LossKind::FlowMapFull)
        .get();
    eprintln!("captured {cap_pkts} packets, counted {seen_pkts}, lost {lost}");
    assert!(lost > 0, "the flood did not fill the map");
    assert_eq!(
        seen_pkts + lost,
        cap_pkts,
        "packets: counted + lost vs capture"
    );
    assert_eq!(
        seen_bytes + lost_bytes,
        cap_bytes,
        "bytes: counted + lost vs capture"
    );
    // The rows of the `losses` table the shipper would send for the interval.
    let now = chrono::Utc::now();
    let mut report = flowlake_collector::ship::LossReporter::new(
        flowlake_collector::ship::LossReport {
            cluster: "c".into(),
            node: "n".into(),
            sources: flowlake_collector::retina::LossSources {
                datapath: Some(metrics.clone()),
                ship: None,
            },
            sinks: None,
            every: Duration::ZERO,
        },
        now,
    );
    let rows = report.take(now);
    let row = rows
        .iter()
        .find(|r| r.kind == "flow_map_full")
        .expect("a flow_map_full row");
    assert_eq!(
        (row.component.as_str(), row.unit.as_str()),
        ("kernel", "packets")
    );
    assert_eq!(
        row.lost as u64,
        cap_pkts - seen_pkts,
        "losses row vs capture"
    );
    assert_eq!(
        row.lost_bytes,
        Some((cap_bytes - seen_bytes) as i64),
        "losses row bytes vs capture"
    );
}

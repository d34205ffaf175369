//! DNS at full size: EDNS answers over UDP beyond 512 bytes (up to the 4096
//! bytes copied), the same answer over TCP split across segments, IPv6, and
//! a query of the node itself (hostNetwork, node processes) to a pod and,
//! through a node interface, to a dnsmasq. A test server in a pod answers
//! with a known number of A records; an answer over the copy size is a
//! counted loss with its reason.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use flowlake_collector::metrics::LossKind;
use flowlake_schemas::{DnsInfo, FlowRecord, ObservationPoint};

use super::dnsmasq::*;
use super::harness::*;

/// A query for `name` (type A) with an EDNS OPT record offering 4096 bytes.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.split('.') {
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    b.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    b
}

/// Answers per name: `many` is over 512 bytes, `huge` near 4096, `over`
/// beyond what is copied.
fn answers_for(name: &str) -> usize {
    match name {
        "many.test" => 40,
        "huge.test" => 240,
        _ => 300,
    }
}

fn answer_ip(i: usize) -> String {
    format!("10.99.{}.{}", i / 256, i % 256)
}

/// The response to `q`: its question, n A records, the OPT record back.
fn respond(q: &[u8]) -> Vec<u8> {
    let mut end = 12;
    let mut labels = Vec::new();
    while q[end] != 0 {
        let n = usize::from(q[end]);
        labels.push(String::from_utf8_lossy(&q[end + 1..end + 1 + n]).into_owned());
        end += 1 + n;
    }
    let question = &q[12..end + 5];
    let n = answers_for(&labels.join("."));
    let mut r = q[..2].to_vec();
    r.extend_from_slice(&[0x81, 0x80, 0, 1]);
    r.extend_from_slice(&(n as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 1]);
    r.extend_from_slice(question);
    for i in 0..n {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 99]);
        r.extend_from_slice(&[(i / 256) as u8, (i % 256) as u8]);
    }
    r.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    r
}

/// Serves `udp` datagrams on each UDP address and one TCP connection (one
/// message, written in three segments) in the namespace at `ns`.
fn serve(
    ns: std::path::PathBuf,
    udp: Vec<(SocketAddr, usize)>,
    tcp: SocketAddr,
) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_netns(ns, move || {
        let socks: Vec<_> = udp
            .iter()
            .map(|(a, n)| (UdpSocket::bind(a).unwrap(), *n))
            .collect();
        let listener = TcpListener::bind(tcp).unwrap();
        tx.send(()).unwrap();
        let udp_threads: Vec<_> = socks
            .into_iter()
            .map(|(s, n)| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1500];
                    for _ in 0..n {
                        let (len, from) = s.recv_from(&mut buf).unwrap();
                        s.send_to(&respond(&buf[..len]), from).unwrap();
                    }
                })
            })
            .collect();
        let (mut c, _) = listener.accept().unwrap();
        c.set_nodelay(true).unwrap();
        let mut len = [0u8; 2];
        c.read_exact(&mut len).unwrap();
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut q).unwrap();
        let r = respond(&q);
        let mut framed = (r.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&r);
        for piece in [&framed[..2], &framed[2..100], &framed[100..]] {
            c.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        let _ = c.read(&mut len);
        for t in udp_threads {
            t.join().unwrap();
        }
    });
    rx.recv().unwrap();
    h
}

/// Sends UDP queries from the namespace at `ns`; returns the answer counts
/// the client read in each response header.
fn ask_udp(
    ns: std::path::PathBuf,
    server: SocketAddr,
    queries: Vec<(u16, &'static str)>,
) -> Vec<u16> {
    in_netns(ns, move || {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .unwrap();
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut counts = Vec::new();
        for (id, name) in queries {
            s.send_to(&query(id, name), server).unwrap();
            let mut buf = vec![0u8; 9000];
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..2], &id.to_be_bytes());
            assert!(n > 512 || name != "many.test");
            counts.push(u16::from_be_bytes([buf[6], buf[7]]));
        }
        counts
    })
    .join()
    .unwrap()
}

fn ask_tcp(ns: std::path::PathBuf, server: SocketAddr, id: u16, name: &'static str) -> u16 {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
        let q = query(id, name);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut r).unwrap();
        u16::from_be_bytes([r[6], r[7]])
    })
    .join()
    .unwrap()
}

/// The DNS rows of one message id.
fn rows_of(records: &[FlowRecord], id: u16) -> Vec<(&FlowRecord, &DnsInfo)> {
    records
        .iter()
        .filter_map(|r| r.dns.as_ref().map(|d| (r, d)))
        .filter(|(_, d)| d.id == id)
        .collect()
}

type Row<'a> = (&'a FlowRecord, &'a DnsInfo);

/// The query row and the response row of message `id`: exactly one each, the
/// query at `points[0]` from `client`, the response at `points[1]` to it.
fn exchange<'a>(
    records: &'a [FlowRecord],
    id: u16,
    name: &str,
    client: IpAddr,
    points: [ObservationPoint; 2],
) -> (Row<'a>, Row<'a>) {
    let rows = rows_of(records, id);
    assert_eq!(rows.len(), 2, "query {id:#x}: {rows:#?}");
    let (q, r) = if rows[0].1.rcode.is_none() {
        (rows[0], rows[1])
    } else {
        (rows[1], rows[0])
    };
    assert_eq!(
        (q.0.observation_point, q.0.src.ip),
        (points[0], client),
        "{q:#?}"
    );
    assert_eq!(q.1.query.as_deref(), Some(name));
    assert_eq!(
        (r.0.observation_point, r.0.dst.ip),
        (points[1], client),
        "{r:#?}"
    );
    (q, r)
}

/// One query row and one response row at the client's points, with every
/// answer, the rcode and a latency.
fn assert_exchange(
    records: &[FlowRecord],
    id: u16,
    name: &str,
    client: IpAddr,
    points: [ObservationPoint; 2],
) {
    let (_, r) = exchange(records, id, name, client, points);
    assert_eq!(r.1.rcode.as_deref(), Some("NOERROR"));
    let want: Vec<String> = (0..answers_for(name)).map(answer_ip).collect();
    assert_eq!(r.1.answers, want, "query {id:#x}");
    assert!(r.1.latency_us.is_some(), "{r:#?}");
}

#[test]
fn large_dns_over_udp_tcp_ipv6_and_from_the_node() {
    if !privileged() {
        return;
    }
    let t = Topology::new(26, 2);
    // Jumbo frames: a 4 KB answer in one datagram, not fragments.
    for (i, p) in t.pods.iter().enumerate() {
        t.in_pod(i, &["ip", "link", "set", "eth0", "mtu", "9000"]);
        t.node(&["ip", "link", "set", &p.host_if, "mtu", "9000"]);
    }
    t.node(&["ip", "addr", "add", "10.77.26.1/24", "dev", "br0"]);
    let node: IpAddr = "10.77.26.1".parse().unwrap();
    let (client, server) = (&t.pods[0], &t.pods[1]);
    let (v4, v6) = (
        SocketAddr::new(server.v4, 53),
        SocketAddr::new(server.v6, 53),
    );
    let srv = serve(t.pod_ns_path(1), vec![(v4, 4), (v6, 1)], v4);
    let (dp, rx, m) = t.collector();

    let got = ask_udp(
        t.pod_ns_path(0),
        v4,
        vec![
            (0x0101, "many.test"),
            (0x0202, "huge.test"),
            (0x0303, "over.test"),
        ],
    );
    assert_eq!(got, vec![40, 240, 300]);
    assert_eq!(
        ask_udp(t.pod_ns_path(0), v6, vec![(0x0606, "many.test")]),
        vec![40]
    );
    assert_eq!(ask_tcp(t.pod_ns_path(0), v4, 0x0707, "many.test"), 40);
    assert_eq!(
        ask_udp(t.node_ns_path(), v4, vec![(0x0808, "many.test")]),
        vec![40]
    );
    srv.join().unwrap();
    let records = finish(dp, rx);

    let pod = [ObservationPoint::FromPod, ObservationPoint::ToPod];
    assert_exchange(&records, 0x0101, "many.test", client.v4, pod);
    assert_exchange(&records, 0x0202, "huge.test", client.v4, pod);
    assert_exchange(&records, 0x0606, "many.test", client.v6, pod);
    assert_exchange(&records, 0x0707, "many.test", client.v4, pod);
    // The node's query reaches the pod without a node interface: its rows
    // are where it leaves the node (to_pod) and the answer comes back.
    let from_node = [ObservationPoint::ToPod, ObservationPoint::FromPod];
    assert_exchange(&records, 0x0808, "many.test", node, from_node);
    // The answer beyond the copy: its query recorded, the answer a loss.
    let over = rows_of(&records, 0x0303);
    assert_eq!(over.len(), 1, "{over:#?}");
    assert_eq!(m.lost_count(LossKind::DnsTruncated), 1);
    assert_eq!(m.lost_count(LossKind::DnsUnparsed), 0);
    assert_eq!(m.lost_count(LossKind::DnsTcpGap), 0);
    // Nothing else carries DNS: one query and one response per exchange.
    assert_eq!(
        records.iter().filter(|r| r.dns.is_some()).count(),
        2 * 5 + 1
    );
}

/// A node process (the node's namespace, not a pod) resolving through a real
/// DNS server, dnsmasq, reached over a veth and bridge standing for the node's
/// interface:
/// its rows are the node's `to_network` (query) and `from_network` (response),
/// with the rcode, answers and latency of what the process itself read.
#[test]
fn node_process_resolves_through_the_node_interface() {
    if !privileged() {
        return;
    }
    let t = Topology::new(27, 1);
    let net = ExtraNetns::add(format!("{}w", t.node_ns()));
    sh(&[
        "ip",
        "link",
        "add",
        "eth9",
        "netns",
        &t.node_ns(),
        "type",
        "veth",
        "peer",
        "name",
        "wire9",
        "netns",
        &net.0,
    ]);
    // The node's interface: a bridge over the veth (a veth whose peer is in
    // another namespace would be taken for a pod's), as in health.rs.
    t.node(&["ip", "link", "add", "uplink", "type", "bridge"]);
    t.node(&["ip", "link", "set", "eth9", "master", "uplink"]);
    for dev in ["eth9", "uplink"] {
        t.node(&["ip", "link", "set", dev, "up"]);
    }
    t.node(&["ip", "addr", "add", "192.168.27.1/24", "dev", "uplink"]);
    net.run(&["ip", "addr", "add", "192.168.27.53/24", "dev", "wire9"]);
    net.run(&["ip", "link", "set", "wire9", "up"]);
    net.run(&["ip", "link", "set", "lo", "up"]);
    let (node, server): (IpAddr, IpAddr) = (
        "192.168.27.1".parse().unwrap(),
        "192.168.27.53".parse().unwrap(),
    );
    let probe = query(0x0001, "host.test");
    let Some(dnsmasq) = Dnsmasq::start(
        &net.0,
        server,
        "/host.test/192.0.2.7",
        t.node_ns_path(),
        probe,
    ) else {
        return;
    };
    let (dp, rx, _m) = t.collector_configured(|c| {
        c.node_interfaces = vec!["uplink".into()];
        c.exclude = vec!["eth9".into()];
    });
    // What the node process read: rcode and answer count of each response.
    let read = in_netns(t.node_ns_path(), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        [(0x3131u16, "host.test"), (0x3232, "absent.test")].map(|(id, name)| {
            s.send_to(&query(id, name), SocketAddr::new(server, 53))
                .unwrap();
            let mut buf = [0u8; 1500];
            let n = s.recv(&mut buf).unwrap();
            assert!(n > 12 && buf[..2] == id.to_be_bytes());
            (buf[3] & 0xf, u16::from_be_bytes([buf[6], buf[7]]))
        })
    })
    .join()
    .unwrap();
    drop(dnsmasq);
    assert_eq!(read, [(0, 1), (3, 0)], "NOERROR with one answer, NXDOMAIN");
    let records = finish(dp, rx);

    let points = [ObservationPoint::ToNetwork, ObservationPoint::FromNetwork];
    for (id, name, rcode, answers) in [
        (
            0x3131,
            "host.test",
            "NOERROR",
            vec!["192.0.2.7".to_string()],
        ),
        (0x3232, "absent.test", "NXDOMAIN", vec![]),
    ] {
        let (q, r) = exchange(&records, id, name, node, points);
        assert_eq!(q.0.dst.ip, server);
        assert_eq!(q.1.qtype.as_deref(), Some("A"));
        for row in [q.0, r.0] {
            assert_eq!(row.interface.as_deref(), Some("uplink"), "{row:#?}");
        }
        assert_eq!(r.1.rcode.as_deref(), Some(rcode));
        assert_eq!(r.1.answers, answers);
        assert!(r.1.latency_us.is_some_and(|l| l > 0), "{r:#?}");
    }
    // Only those rows carry DNS (the probe went before the collector started).
    assert_eq!(records.iter().filter(|r| r.dns.is_some()).count(), 4);
}

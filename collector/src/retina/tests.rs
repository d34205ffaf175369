//! Unit tests of every Retina metric against hand-computed values.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use flowlake_schemas::{
    DnsInfo, Endpoint, FlowRecord, Identity, ObservationPoint, Protocol, TcpHealth, Verdict,
};
use prometheus_client::registry::Registry;

use super::*;
use crate::metrics::{DatapathMetrics, LossKind};
use crate::ship::{DropReason, ShipMetrics};

fn t(s: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_767_225_600_000_000 + (s * 1e6) as i64).expect("valid")
}

/// A clock tests move by hand.
fn manual_clock(start: DateTime<Utc>) -> (Clock, Arc<Mutex<DateTime<Utc>>>) {
    let now = Arc::new(Mutex::new(start));
    let n = Arc::clone(&now);
    (Arc::new(move || *n.lock().expect("clock")), now)
}

fn end(ip: &str, port: u16, ns: &str, pod: &str) -> Endpoint {
    Endpoint {
        ip: ip.parse().expect("ip"),
        port: Some(port),
        identity: Some(Arc::new(Identity {
            namespace: Some(ns.into()),
            pod: Some(pod.into()),
            workload: Some(format!("{pod}-wl")),
            workload_kind: Some("Deployment".into()),
            service: Some(format!("{pod}-svc")),
            zone: Some("z1".into()),
            ..Identity::default()
        })),
    }
}

fn rec(point: ObservationPoint, verdict: Verdict, packets: u64, bytes: u64) -> FlowRecord {
    FlowRecord {
        interval_start: t(0.0),
        interval_end: t(10.0),
        cluster: "c".into(),
        node: "n1".into(),
        observation_point: point,
        interface: None,
        protocol: Protocol::Tcp,
        src: end("10.0.0.1", 40000, "shop", "web-1"),
        dst: end("10.0.0.2", 8080, "shop", "api-1"),
        icmp: None,
        packets,
        bytes,
        wire_packets: None,
        tcp_flags: None,
        verdict,
        drop_reason: None,
        tcp: None,
        dns: None,
    }
}

struct Fixture {
    m: RetinaMetrics,
    registry: Registry,
    now: Arc<Mutex<DateTime<Utc>>>,
    _proc: tempfile::TempDir,
}

const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 1234\n\
Tcp: RtoAlgorithm ActiveOpens CurrEstab RetransSegs\nTcp: 1 17 3 9\n\
Udp: InDatagrams NoPorts InErrors\nUdp: 100 2 1\n";
const NETSTAT: &str = "TcpExt: SyncookiesSent ListenOverflows TCPTimeouts\nTcpExt: 0 5 11\n\
IpExt: InNoRoutes InOctets\nIpExt: 0 987654\n";
const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0\n\
   1: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 10 0\n\
   2: 0100007F:1F90 0100007F:A001 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 10 0\n\
   3: 0100007F:A002 0100007F:1F90 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 10 0\n";
const TCP6: &str = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n";

fn write_proc(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("net")).expect("mkdir");
    for (name, text) in [
        ("snmp", SNMP),
        ("netstat", NETSTAT),
        ("tcp", TCP),
        ("tcp6", TCP6),
    ] {
        std::fs::write(dir.join("net").join(name), text).expect("write");
    }
}

fn fixture(cfg: impl FnOnce(&mut RetinaConfig), losses: LossSources) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    write_proc(dir.path());
    let mut c = RetinaConfig::for_tests(dir.path().to_path_buf());
    cfg(&mut c);
    let (clock, now) = manual_clock(t(0.0));
    let mut registry = Registry::default();
    let m = RetinaMetrics::register(&mut registry, &c, losses, clock);
    Fixture {
        m,
        registry,
        now,
        _proc: dir,
    }
}

/// Asserts that each of `lines` is a whole line of `out`.
fn assert_lines(out: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            out.lines().any(|l| l == *line),
            "missing {line:?} in\n{out}"
        );
    }
}

fn text(f: &Fixture) -> String {
    encode(&f.registry).expect("encode")
}

#[test]
fn node_level_flow_metrics_match_hand_computed_totals() {
    use ObservationPoint::*;
    let f = fixture(|c| c.mode = MetricsMode::Basic, LossSources::default());
    let mut drop1 = rec(ToPod, Verdict::Dropped, 3, 180);
    drop1.drop_reason = Some("NETFILTER_DROP".into());
    let drop2 = rec(FromPod, Verdict::Dropped, 2, 120);
    let mut retrans = rec(FromPod, Verdict::Forwarded, 7, 700);
    retrans.tcp = Some(TcpHealth {
        retransmits: 4,
        ..TcpHealth::default()
    });
    let mut retrans2 = rec(ToNetwork, Verdict::Forwarded, 5, 500);
    retrans2.tcp = Some(TcpHealth {
        retransmits: 1,
        ..TcpHealth::default()
    });
    let mut query = rec(FromPod, Verdict::Forwarded, 1, 70);
    query.dns = Some(DnsInfo {
        query: Some("a.example".into()),
        ..DnsInfo::default()
    });
    let mut response = rec(ToPod, Verdict::Forwarded, 1, 90);
    response.dns = Some(DnsInfo {
        query: Some("a.example".into()),
        rcode: Some("NOERROR".into()),
        ..DnsInfo::default()
    });
    f.m.observe(&[
        rec(FromNetwork, Verdict::Forwarded, 10, 1000),
        rec(FromNetwork, Verdict::Forwarded, 1, 60),
        retrans2,
        retrans,
        drop1,
        drop2,
        query,
        response,
    ]);
    let out = text(&f);
    assert_lines(
        &out,
        &[
            // Forwarded packets are counted on node interfaces only: 10+1 in, 5 out.
            r#"networkobservability_forward_count{direction="ingress"} 11"#,
            r#"networkobservability_forward_bytes{direction="ingress"} 1060"#,
            r#"networkobservability_forward_count{direction="egress"} 5"#,
            r#"networkobservability_forward_bytes{direction="egress"} 500"#,
            r#"networkobservability_drop_count{reason="NETFILTER_DROP",direction="ingress"} 3"#,
            r#"networkobservability_drop_bytes{reason="NETFILTER_DROP",direction="ingress"} 180"#,
            r#"networkobservability_drop_count{reason="unknown",direction="egress"} 2"#,
            r#"networkobservability_drop_bytes{reason="unknown",direction="egress"} 120"#,
            "networkobservability_tcp_retransmission_count 5",
            "networkobservability_dns_request_count 1",
            "networkobservability_dns_response_count 1",
            "# TYPE networkobservability_drop_count counter",
            "# TYPE networkobservability_forward_count counter",
        ],
    );
    assert!(
        !out.contains("networkobservability_drop_count_total"),
        "{out}"
    );
    // Flowlake's own counters keep the `_total` suffix.
    assert!(
        out.contains("flowlake_collector_retina_series_expired_total 0"),
        "{out}"
    );
    // Basic mode: no pod-level series.
    assert_eq!(f.m.adv.total(), 0);
}

fn ctx_labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[test]
fn remote_context_labels_and_pod_level_values() {
    use ObservationPoint::*;
    let f = fixture(|_| {}, LossSources::default());
    let mut fwd = rec(FromPod, Verdict::Forwarded, 4, 400);
    fwd.tcp_flags = Some(0x12); // SYN + ACK
    fwd.tcp = Some(TcpHealth {
        retransmits: 2,
        ..TcpHealth::default()
    });
    let mut dropped = rec(ToPod, Verdict::Dropped, 6, 360);
    dropped.drop_reason = Some("TCP_INVALID_SEQUENCE".into());
    let mut response = rec(ToPod, Verdict::Forwarded, 1, 100);
    response.dns = Some(DnsInfo {
        query: Some("api.shop.svc.cluster.local".into()),
        qtype: Some("A".into()),
        rcode: Some("NOERROR".into()),
        answers: vec!["10.96.0.7".into(), "10.96.0.8".into()],
        ..DnsInfo::default()
    });
    // Node interfaces are not pod observation points: no adv_forward from it.
    f.m.observe(&[
        fwd.clone(),
        fwd,
        dropped,
        response,
        rec(ToNetwork, Verdict::Forwarded, 9, 900),
    ]);
    let ctx = ctx_labels(&[
        ("source_ip", "10.0.0.1"),
        ("source_namespace", "shop"),
        ("source_podname", "web-1"),
        ("source_workload_kind", "Deployment"),
        ("source_workload_name", "web-1-wl"),
        ("source_service", "web-1-svc"),
        ("source_port", "40000"),
        ("source_zone", "z1"),
        ("destination_namespace", "shop"),
        ("destination_podname", "api-1"),
    ]);
    let with = |head: &[(&'static str, &str)]| {
        let mut l = ctx_labels(head);
        l.extend(ctx.iter().cloned());
        l
    };
    let adv = &f.m.adv;
    let egress = with(&[("direction", "egress")]);
    assert_eq!(adv.value(AdvMetric::ForwardCount, &egress), Some(8));
    assert_eq!(adv.value(AdvMetric::ForwardBytes, &egress), Some(800));
    assert_eq!(
        adv.len(AdvMetric::ForwardCount),
        2,
        "egress and the DNS response's ingress"
    );
    assert_eq!(
        adv.value(AdvMetric::TcpFlagsCount, &with(&[("flag", "SYN")])),
        Some(2)
    );
    assert_eq!(
        adv.value(AdvMetric::TcpFlagsCount, &with(&[("flag", "ACK")])),
        Some(2)
    );
    assert_eq!(adv.len(AdvMetric::TcpFlagsCount), 2);
    assert_eq!(adv.value(AdvMetric::TcpRetransCount, &with(&[])), Some(4));
    let drop = with(&[("reason", "TCP_INVALID_SEQUENCE"), ("direction", "ingress")]);
    assert_eq!(adv.value(AdvMetric::DropCount, &drop), Some(6));
    assert_eq!(adv.value(AdvMetric::DropBytes, &drop), Some(360));
    let dns = with(&[
        ("return_code", "NOERROR"),
        ("query_type", "A"),
        ("query", "api.shop.svc.cluster.local"),
        ("response", "10.96.0.7,10.96.0.8"),
        ("num_response", "2"),
    ]);
    assert_eq!(adv.value(AdvMetric::DnsResponseCount, &dns), Some(1));
    assert_eq!(adv.len(AdvMetric::DnsRequestCount), 0);
    // A request (seen on the node interface: no adv_forward series from it).
    let mut request = rec(ToNetwork, Verdict::Forwarded, 1, 60);
    request.dns = Some(DnsInfo {
        query: Some("db.shop".into()),
        qtype: Some("AAAA".into()),
        ..DnsInfo::default()
    });
    f.m.observe(&[request.clone(), request]);
    let req = with(&[("query_type", "AAAA"), ("query", "db.shop")]);
    assert_eq!(adv.value(AdvMetric::DnsRequestCount, &req), Some(2));
    assert_eq!(adv.len(AdvMetric::ForwardCount), 2);
    let out = text(&f);
    assert!(
        out.contains("# TYPE networkobservability_adv_forward_count counter"),
        "{out}"
    );
    assert!(
        out.contains(r#"networkobservability_adv_drop_count{reason="TCP_INVALID_SEQUENCE",direction="ingress",source_ip="10.0.0.1""#),
        "{out}"
    );
}

#[test]
fn local_context_labels_the_local_pod_and_filters_by_its_namespace() {
    use ObservationPoint::*;
    let f = fixture(
        |c| {
            c.mode = MetricsMode::Local;
            c.source_labels = vec![ContextLabel::Namespace, ContextLabel::Podname];
            c.exclude_namespaces = vec!["kube-system".into()];
        },
        LossSources::default(),
    );
    let mut to_sys = rec(FromPod, Verdict::Forwarded, 3, 300);
    to_sys.dst = end("10.0.0.9", 53, "kube-system", "coredns-1");
    let mut into_sys = to_sys.clone();
    into_sys.observation_point = ToPod;
    f.m.observe(&[to_sys, into_sys, rec(ToPod, Verdict::Forwarded, 2, 200)]);
    let adv = &f.m.adv;
    let egress = ctx_labels(&[
        ("direction", "egress"),
        ("namespace", "shop"),
        ("podname", "web-1"),
    ]);
    let ingress = ctx_labels(&[
        ("direction", "ingress"),
        ("namespace", "shop"),
        ("podname", "api-1"),
    ]);
    assert_eq!(adv.value(AdvMetric::ForwardCount, &egress), Some(3));
    assert_eq!(adv.value(AdvMetric::ForwardCount, &ingress), Some(2));
    // The packets entering coredns are local to an excluded namespace.
    assert_eq!(adv.len(AdvMetric::ForwardCount), 2);
}

#[test]
fn namespace_include_list_in_remote_mode() {
    use ObservationPoint::*;
    let f = fixture(
        |c| c.include_namespaces = vec!["billing".into()],
        LossSources::default(),
    );
    let mut billing = rec(FromPod, Verdict::Forwarded, 1, 10);
    billing.dst = end("10.0.0.5", 80, "billing", "ledger-1");
    f.m.observe(&[rec(FromPod, Verdict::Forwarded, 1, 10), billing]);
    // shop → shop is left out; shop → billing is in (one end is included).
    assert_eq!(f.m.adv.len(AdvMetric::ForwardCount), 1);
}

#[test]
fn series_bound_counts_the_excess_and_keeps_updating_existing_series() {
    use ObservationPoint::*;
    let f = fixture(|c| c.max_series = 3, LossSources::default());
    let pod = |i: u16, packets| {
        let mut r = rec(FromPod, Verdict::Forwarded, packets, 100);
        r.src = end("10.0.1.1", 1000 + i, "shop", &format!("web-{i}"));
        r
    };
    // Each record makes two series (count and bytes): the second pod's bytes series
    // and everything of the third pod exceed the bound of 3.
    f.m.observe(&[pod(1, 1), pod(2, 1), pod(3, 1), pod(1, 5)]);
    assert_eq!(f.m.adv.total(), 3);
    assert_eq!(f.m.adv.rejected(AdvMetric::ForwardBytes), 2);
    assert_eq!(f.m.adv.rejected(AdvMetric::ForwardCount), 1);
    assert_eq!(f.m.adv.len(AdvMetric::ForwardCount), 2);
    let out = text(&f);
    assert!(
        out.contains(
            r#"flowlake_collector_retina_series_rejected_total{metric="adv_forward_bytes"} 2"#
        ),
        "{out}"
    );
    assert!(out.contains("flowlake_collector_retina_series 3"), "{out}");
}

#[test]
fn idle_series_expire_after_the_ttl_of_injected_time() {
    use ObservationPoint::*;
    let f = fixture(
        |c| c.series_ttl = std::time::Duration::from_secs(60),
        LossSources::default(),
    );
    f.m.observe(&[rec(FromPod, Verdict::Forwarded, 1, 10)]);
    *f.now.lock().unwrap() = t(50.0);
    let mut other = rec(ToPod, Verdict::Forwarded, 1, 10);
    other.src = end("10.0.0.3", 1, "shop", "cart-1");
    f.m.observe(&[other]);
    assert_eq!(f.m.adv.total(), 4);
    *f.now.lock().unwrap() = t(60.0);
    assert_eq!(f.m.expire_idle(), 0, "idle for exactly the TTL is kept");
    *f.now.lock().unwrap() = t(61.0);
    assert_eq!(f.m.expire_idle(), 2);
    assert_eq!(f.m.adv.total(), 2);
    assert_eq!(f.m.adv.expired(), 2);
    *f.now.lock().unwrap() = t(111.0);
    assert_eq!(f.m.expire_idle(), 2);
    assert_eq!(f.m.adv.total(), 0);
    assert!(!text(&f).contains("networkobservability_adv_forward_count{"));
}

#[test]
fn apiserver_latency_uses_full_timestamps() {
    // Across a second boundary: 1.9 s → 2.1 s is 200 ms (sub-second parts alone
    // would give 0.1 - 0.9 = -800 ms).
    assert_eq!(latency_ms(t(1.9), t(2.1)).map(|v| v.round()), Some(200.0));
    assert_eq!(
        latency_ms(t(5.0), t(7.0005)).map(|v| (v * 10.0).round()),
        Some(20005.0)
    );
    assert_eq!(latency_ms(t(2.0), t(1.0)), None);

    let api: IpAddr = "10.96.0.1".parse().unwrap();
    let f = fixture(|c| c.apiserver_ips = vec![api], LossSources::default());
    let mut to_api = rec(ObservationPoint::ToNetwork, Verdict::Forwarded, 3, 300);
    to_api.dst = Endpoint::new(api, Some(443));
    to_api.tcp = Some(TcpHealth {
        handshake_us: Some(1_500),
        srtt_us: Some(2_250),
        ..TcpHealth::default()
    });
    let mut elsewhere = to_api.clone();
    elsewhere.dst = Endpoint::new("10.96.0.2".parse().unwrap(), Some(443));
    // The same connection seen at the pod's veth: counted once, at the node.
    let mut at_pod = to_api.clone();
    at_pod.observation_point = ObservationPoint::FromPod;
    // Unanswered: 2 SYNs with no SYN-ACK, and 4 retransmitted segments.
    let mut syns = rec(ObservationPoint::ToNetwork, Verdict::Forwarded, 2, 120);
    syns.dst = Endpoint::new(api, Some(443));
    syns.tcp_flags = Some(0x02);
    let mut retransmitted = to_api.clone();
    retransmitted.tcp_flags = Some(0x18);
    retransmitted.tcp = Some(TcpHealth {
        retransmits: 4,
        ..TcpHealth::default()
    });
    let mut syns_elsewhere = syns.clone();
    syns_elsewhere.dst = elsewhere.dst.clone();
    f.m.observe(&[
        to_api,
        elsewhere,
        at_pod,
        syns,
        retransmitted,
        syns_elsewhere,
    ]);
    let api = f.m.apiserver.as_ref().unwrap();
    api.observe_exchange(t(1.999), t(2.004));
    let out = text(&f);
    let value = |name: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .expect(name);
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let hs = "networkobservability_adv_node_apiserver_tcp_handshake_latency";
    let lat = "networkobservability_adv_node_apiserver_latency";
    assert_eq!(value(&format!("{hs}_count")), 1.0);
    assert!(
        out.contains(
            "networkobservability_adv_node_apiserver_no_response{no_response=\"no_response\"} 6\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("# TYPE networkobservability_adv_node_apiserver_no_response counter"),
        "{out}"
    );
    assert!((value(&format!("{hs}_sum")) - 1.5).abs() < 1e-9);
    // 2.25 ms from the record's RTT, 5 ms from the exchange across a second boundary.
    assert_eq!(value(&format!("{lat}_count")), 2.0);
    assert!((value(&format!("{lat}_sum")) - 7.25).abs() < 1e-6, "{out}");
    assert!(
        out.contains(
            r#"networkobservability_adv_node_apiserver_tcp_handshake_latency_bucket{le="1.5"} 1"#
        ),
        "{out}"
    );
    assert!(
        out.contains(
            r#"networkobservability_adv_node_apiserver_tcp_handshake_latency_bucket{le="0.5"} 0"#
        ),
        "{out}"
    );
}

#[test]
fn proc_statistics_are_read_at_scrape_time() {
    let f = fixture(|_| {}, LossSources::default());
    let out = text(&f);
    assert_lines(
        &out,
        &[
            r#"networkobservability_tcp_state{state="LISTEN"} 2"#,
            r#"networkobservability_tcp_state{state="ESTABLISHED"} 2"#,
            r#"networkobservability_tcp_state{state="TIME_WAIT"} 1"#,
            r#"networkobservability_tcp_connection_stats{statistic_name="RetransSegs"} 9"#,
            r#"networkobservability_tcp_connection_stats{statistic_name="CurrEstab"} 3"#,
            r#"networkobservability_tcp_connection_stats{statistic_name="ListenOverflows"} 5"#,
            r#"networkobservability_tcp_connection_stats{statistic_name="TCPTimeouts"} 11"#,
            r#"networkobservability_ip_connection_stats{statistic_name="InReceives"} 1234"#,
            r#"networkobservability_ip_connection_stats{statistic_name="InOctets"} 987654"#,
            r#"networkobservability_udp_connection_stats{statistic_name="NoPorts"} 2"#,
            r#"networkobservability_udp_connection_stats{statistic_name="InDatagrams"} 100"#,
            "# TYPE networkobservability_tcp_state gauge",
            "flowlake_collector_retina_proc_read_errors_total 0",
        ],
    );
    // Values follow the files: a later scrape sees new values.
    std::fs::write(
        f._proc.path().join("net/snmp"),
        SNMP.replace("100 2 1", "150 2 1"),
    )
    .unwrap();
    assert!(text(&f).contains(r#"udp_connection_stats{statistic_name="InDatagrams"} 150"#));
    std::fs::remove_file(f._proc.path().join("net/tcp6")).unwrap();
    let out = text(&f);
    assert!(
        out.contains(r#"networkobservability_tcp_state{state="LISTEN"} 1"#),
        "{out}"
    );
    assert!(
        out.contains("flowlake_collector_retina_proc_read_errors_total 1"),
        "{out}"
    );
}

#[test]
fn the_real_proc_parses() {
    let (stats, missing) = ProcStats::read(std::path::Path::new("/proc"));
    if missing > 0 {
        eprintln!("skipped: /proc/net is not fully readable here ({missing} files)");
        return;
    }
    assert!(
        stats.tcp.iter().any(|(k, _)| k == "ActiveOpens"),
        "{stats:?}"
    );
    assert!(
        stats.udp.iter().any(|(k, _)| k == "InDatagrams"),
        "{stats:?}"
    );
    assert!(stats.ip.iter().any(|(k, _)| k == "InReceives"), "{stats:?}");
}

#[test]
fn lost_events_come_from_the_datapath_and_shipper_counters() {
    let mut other = Registry::default();
    let datapath = DatapathMetrics::new(&mut other);
    let ship = ShipMetrics::register(&mut other);
    let f = fixture(
        |_| {},
        LossSources {
            datapath: Some(datapath.clone()),
            ship: Some(ship.clone()),
        },
    );
    datapath.lost(LossKind::FlowMapFull).inc_by(3);
    datapath.lost(LossKind::ChannelFull).inc_by(2);
    ship.dropped(DropReason::SpoolFull, 7);
    let out = text(&f);
    assert_lines(
        &out,
        &[
            "# TYPE networkobservability_lost_events_counter counter",
            r#"networkobservability_lost_events_counter{type="kernel",reason="flow_map_full"} 3"#,
            r#"networkobservability_lost_events_counter{type="kernel",reason="dns_ringbuf_full"} 0"#,
            r#"networkobservability_lost_events_counter{type="buffered_channel",reason="channel_full"} 2"#,
            r#"networkobservability_lost_events_counter{type="shipper",reason="spool_full"} 7"#,
        ],
    );
}

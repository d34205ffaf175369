//! The encoder's messages read back by the testkit's small RFC 7011 reader written
//! from the RFC (templates, enterprise bit, variable-length fields), not from the
//! encoder.

use std::sync::Arc;

use super::*;
use flowlake_schemas::{DnsInfo, Endpoint, Identity, ObservationPoint, TcpHealth};
use flowlake_testkit::ipfix::{Reader, be16, be32, unsigned};

fn record(i: u64, v6: bool) -> FlowRecord {
    let t = DateTime::from_timestamp_millis(1_790_000_000_000 + i as i64).unwrap();
    let ip = |n: u8| -> IpAddr {
        if v6 {
            format!("2001:db8::{n}").parse().unwrap()
        } else {
            format!("10.0.0.{n}").parse().unwrap()
        }
    };
    let id = Identity {
        namespace: Some("shop".into()),
        pod: Some(format!("cart-{i}")),
        workload: Some("cart".into()),
        workload_kind: Some("Deployment".into()),
        node: Some("node-a".into()),
        ..Default::default()
    };
    FlowRecord {
        interval_start: t,
        interval_end: t + chrono::Duration::seconds(10),
        cluster: "c1".into(),
        node: "node-a".into(),
        observation_point: ObservationPoint::FromPod,
        interface: Some("veth0".into()),
        protocol: Protocol::Tcp,
        src: Endpoint {
            ip: ip(1),
            port: Some(40000),
            identity: Some(Arc::new(id)),
        },
        dst: Endpoint::new(ip(2), Some(80)),
        icmp: None,
        packets: i + 1,
        bytes: 1000 + i,
        wire_packets: None,
        tcp_flags: Some(0x12),
        verdict: if i.is_multiple_of(2) {
            Verdict::Forwarded
        } else {
            Verdict::Dropped
        },
        drop_reason: (i % 2 == 1).then(|| "NETFILTER_DROP".into()),
        // TCP health on every fourth record (no handshake time), DNS on every fifth.
        tcp: i.is_multiple_of(4).then_some(TcpHealth {
            retransmits: i as u32,
            resets: 1,
            srtt_us: Some(1000 + i),
            handshake_us: None,
        }),
        dns: i.is_multiple_of(5).then(|| DnsInfo {
            id: i as u16,
            query: Some("cart.shop.svc.cluster.local".into()),
            qtype: Some("A".into()),
            rcode: Some("NOERROR".into()),
            answers: vec!["10.0.0.2".into(), "10.0.0.3".into()],
            latency_us: Some(250 + i),
        }),
    }
}

#[test]
fn messages_carry_every_record_with_its_elements_and_sequence_numbers() {
    let now = Utc::now();
    let mut enc = Encoder::new(7, 32473, 1400);
    let mut reader = Reader::default();
    let t = enc.templates(now);
    assert_eq!(be32(&t[12..]), 7, "observation domain");
    assert!(reader.read(&t).1.is_empty());
    assert_eq!(reader.templates.len(), 2);

    let recs: Vec<FlowRecord> = (0..100).map(|i| record(i, i % 3 == 0)).collect();
    let mut msgs = Vec::new();
    for r in &recs {
        msgs.extend(enc.push(r, now).unwrap());
    }
    msgs.extend(enc.finish());
    assert!(msgs.len() > 3, "split by the 1400-byte limit");
    let mut got = Vec::new();
    let mut expect_seq = 0u32;
    for m in &msgs {
        assert!(m.bytes.len() <= 1400);
        let (seq, records) = reader.read(&m.bytes);
        assert_eq!(
            seq, expect_seq,
            "sequence = data records before the message"
        );
        assert_eq!(records.len() as u64, m.records);
        expect_seq += m.records as u32;
        got.extend(records);
    }
    assert_eq!(got.len(), 100);
    for (r, d) in recs.iter().zip(&got) {
        let u64_of = |id| u64::from_be_bytes(d[&(id, 0)].clone().try_into().unwrap());
        assert_eq!(u64_of(elements::iana_id::OCTET_DELTA_COUNT), r.bytes);
        assert_eq!(u64_of(elements::iana_id::PACKET_DELTA_COUNT), r.packets);
        assert_eq!(
            u64_of(elements::iana_id::FLOW_START_MILLISECONDS),
            r.interval_start.timestamp_millis() as u64
        );
        let src = if r.src.ip.is_ipv6() { 27 } else { 8 };
        assert_eq!(d[&(src, 0)].len(), if r.src.ip.is_ipv6() { 16 } else { 4 });
        assert_eq!(be16(&d[&(7, 0)]), 40000);
        assert_eq!(d[&(4, 0)], vec![6]);
        let fwd = d[&(elements::iana_id::FORWARDING_STATUS, 0)][0];
        assert_eq!(
            fwd,
            if r.verdict == Verdict::Dropped {
                129
            } else {
                64
            }
        );
        let s = |id| String::from_utf8(d[&(id, 32473)].clone()).unwrap();
        use elements::flowlake_id as f;
        assert_eq!(
            s(f::SRC_POD),
            r.src.identity.as_ref().unwrap().pod.clone().unwrap()
        );
        assert_eq!(s(f::SRC_NAMESPACE), "shop");
        assert_eq!(s(f::DST_POD), "", "unknown names are empty");
        assert_eq!(s(f::OBSERVATION_POINT), "from_pod");
        assert_eq!(s(f::DROP_REASON), r.drop_reason.as_deref().unwrap_or(""));
        assert_eq!(String::from_utf8(d[&(82, 0)].clone()).unwrap(), "veth0");
        // TCP health and DNS: fixed-length numbers (0 when absent) and strings.
        let n = |id, len| {
            let v = &d[&(id, 32473)];
            assert_eq!(v.len(), len, "element {id}");
            unsigned(v)
        };
        let tcp = r.tcp.unwrap_or_default();
        assert_eq!(n(f::TCP_RETRANSMITS, 4), u64::from(tcp.retransmits));
        assert_eq!(n(f::TCP_RESETS, 4), u64::from(tcp.resets));
        assert_eq!(n(f::TCP_SRTT_MICROSECONDS, 8), tcp.srtt_us.unwrap_or(0));
        assert_eq!(n(f::TCP_HANDSHAKE_MICROSECONDS, 8), 0);
        let dns = r.dns.clone().unwrap_or_default();
        assert_eq!(n(f::DNS_ID, 2), u64::from(dns.id));
        assert_eq!(s(f::DNS_QUERY), dns.query.unwrap_or_default());
        assert_eq!(s(f::DNS_QTYPE), dns.qtype.unwrap_or_default());
        assert_eq!(s(f::DNS_RCODE), dns.rcode.unwrap_or_default());
        assert_eq!(s(f::DNS_ANSWERS), dns.answers.join(","));
        assert_eq!(
            n(f::DNS_LATENCY_MICROSECONDS, 8),
            dns.latency_us.unwrap_or(0)
        );
    }
    assert!(recs.iter().any(|r| r.tcp.is_some() && r.dns.is_some()));
}

#[test]
fn long_names_use_the_three_octet_length_and_oversized_records_are_refused() {
    let now = Utc::now();
    let mut r = record(0, false);
    let mut id = (*r.src.identity.clone().unwrap()).clone();
    id.pod = Some("p".repeat(300));
    r.src.identity = Some(Arc::new(id));
    let mut enc = Encoder::new(1, 32473, 1400);
    let mut reader = Reader::default();
    reader.read(&enc.templates(now));
    assert!(enc.push(&r, now).unwrap().is_none());
    let (_, got) = reader.read(&enc.finish().unwrap().bytes);
    assert_eq!(got[0][&(elements::flowlake_id::SRC_POD, 32473)].len(), 300);

    let mut huge = record(0, false);
    huge.interface = Some("i".repeat(2000).into());
    assert_eq!(enc.push(&huge, now), Err(TooLarge));
    assert!(enc.finish().is_none(), "nothing half-written");
}

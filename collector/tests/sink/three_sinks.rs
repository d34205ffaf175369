//! The same generated records through `ingester,ipfix,jsonl` at once: the fake
//! ingester's rows, nfdump's flows and DuckDB over the rotated, gzipped flow log
//! report the same flows, packets and bytes — and the same flows one by one. Over
//! TCP the IPFIX stream itself is also decoded (nfdump 1.7 shows no enterprise
//! elements): each flow's TCP health and DNS elements carry the record's values.

use std::collections::BTreeMap;
use std::time::Duration;

use flowlake_collector::enrich::{EnrichMetrics, Enricher, system_clock};
use flowlake_collector::ship::{ShipConfig, ShipMetrics, Shipper};
use flowlake_collector::sink::ipfix::{IpfixConfig, Transport};
use flowlake_collector::sink::{self, SinkConfig, SinkKind, SinkLoss, SinkMetrics, SinkSet};
use flowlake_schemas::FlowRecord;

use super::receivers::{Messages, Nfcapd, duckdb, files, missing, tcp_front};
use crate::ship::fake_ingester::{FakeIngester, Mode};

const SINKS: [&str; 3] = ["ingester", "ipfix", "jsonl"];

fn records() -> Vec<FlowRecord> {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.rate = 50.0;
    let mut all = flowlake_gen::records(&cfg);
    all.truncate(3000);
    assert_eq!(all.len(), 3000, "workload too small");
    all
}

/// (src, dst, protocol, packets, bytes) of each flow, sorted: what every reader must agree on.
type Flow = (String, String, u8, u64, u64);

fn truth(recs: &[FlowRecord]) -> Vec<Flow> {
    let mut v: Vec<Flow> = recs
        .iter()
        .map(|r| {
            (
                r.src.ip.to_string(),
                r.dst.ip.to_string(),
                r.protocol.number(),
                r.packets,
                r.bytes,
            )
        })
        .collect();
    v.sort();
    v
}

fn from_nfdump(rows: &[serde_json::Value]) -> Vec<Flow> {
    let s = |r: &serde_json::Value, k: &str| {
        r[k].as_str()
            .unwrap_or_else(|| panic!("nfdump field {k} in {r}"))
            .to_string()
    };
    let n = |r: &serde_json::Value, k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("nfdump field {k} in {r}"))
    };
    let mut v: Vec<Flow> = rows
        .iter()
        .map(|r| {
            (
                s(r, "src4_addr"),
                s(r, "dst4_addr"),
                n(r, "proto") as u8,
                n(r, "in_packets"),
                n(r, "in_bytes"),
            )
        })
        .collect();
    v.sort();
    v
}

async fn three_sinks(transport: Transport) {
    if missing(&["nfcapd", "nfdump"]) {
        return;
    }
    let recs = records();
    let nfcapd = Nfcapd::start();
    let (target, messages) = match transport {
        Transport::Udp => (nfcapd.addr, None),
        Transport::Tcp => {
            let (addr, messages) = tcp_front(nfcapd.addr);
            (addr, Some(messages))
        }
    };
    let mut ipfix = IpfixConfig::new(target.to_string(), transport);
    if messages.is_some() {
        // The TCP front passes each message to nfcapd as one datagram.
        ipfix.max_message_bytes = flowlake_testkit::nfcapd::LARGEST_DATAGRAM;
    }
    let ingester = FakeIngester::new(Mode::Up);
    let url = format!(
        "http://{}",
        ingester.serve(([127, 0, 0, 1], 0).into()).await
    );
    let spool = tempfile::tempdir().unwrap();
    let mut ship_cfg = ShipConfig::for_tests(url, spool.path().to_path_buf());
    ship_cfg.drain_timeout = Duration::from_secs(30);
    let ship_metrics = ShipMetrics::default();
    let shipper = Shipper::start(
        &ship_cfg,
        Enricher::disabled(EnrichMetrics::default()),
        ship_metrics.clone(),
        system_clock(),
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut cfg = SinkConfig {
        sinks: vec![SinkKind::Ingester, SinkKind::Ipfix, SinkKind::Jsonl],
        queue_batches: 1024,
        ipfix: Some(ipfix),
        ..SinkConfig::default()
    };
    cfg.jsonl.path = logs.path().join("flows.jsonl");
    cfg.jsonl.max_bytes = 256 << 10;
    cfg.jsonl.max_files = 100;
    let metrics = SinkMetrics::default();
    let sinks = sink::open(&cfg, Some(shipper.sender())).unwrap();
    let set = SinkSet::start(sinks, cfg.queue_batches, metrics.clone(), system_clock()).unwrap();
    for chunk in recs.chunks(100) {
        set.send(chunk.to_vec());
        // nfcapd takes UDP datagrams as fast as a loopback sender makes them only
        // up to its socket buffer: pace the test's bursts (the sink never waits).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::spawn_blocking(move || set.close())
        .await
        .unwrap();
    shipper.shutdown().await;
    for s in SINKS {
        assert_eq!(metrics.received_count(s), 3000, "{s}");
        assert_eq!(metrics.written_count(s), 3000, "{s} wrote everything");
        for why in [SinkLoss::QueueFull, SinkLoss::SendError, SinkLoss::Encode] {
            assert_eq!(metrics.dropped_count(s, why), 0, "{s} {why:?}");
        }
    }
    let want = truth(&recs);
    let (packets, bytes): (u64, u64) = recs
        .iter()
        .fold((0, 0), |(p, b), r| (p + r.packets, b + r.bytes));

    // The ingester's rows (Arrow, decoded by the fake ingester).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ingester.rows() < recs.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let s = ingester.inner.lock().unwrap();
        assert_eq!(
            s.bytes.len(),
            3000,
            "ingester rows; shipped {}, dropped {:?}, duplicates {}",
            ship_metrics.records_shipped.get(),
            ship_metrics.records_dropped,
            s.duplicates
        );
        assert_eq!(s.bytes.iter().sum::<i64>() as u64, bytes);
        assert_eq!(s.packets.iter().sum::<i64>() as u64, packets);
    }

    // nfcapd → nfdump.
    let rows = tokio::task::spawn_blocking(move || nfcapd.stop_and_dump())
        .await
        .unwrap();
    assert_eq!(rows.len(), 3000, "nfdump flows");
    assert_eq!(from_nfdump(&rows), want, "nfdump: the same flows");
    // flowDirection (61): nfdump's `direction`. (nfdump 1.7 does not read
    // forwardingStatus from IPFIX; the unit tests' RFC 7011 reader checks it.)
    let egress = recs
        .iter()
        .filter(|r| r.direction() == flowlake_schemas::Direction::Egress)
        .count();
    let nf_egress = rows.iter().filter(|r| r["direction"] == 1).count();
    assert_eq!(nf_egress, egress, "flowDirection: {:#}", rows[0]);
    if let Some(messages) = messages {
        let (got, want) = (tcp_and_dns(&messages), tcp_and_dns_truth(&recs));
        assert_eq!(got.len(), want.len(), "IPFIX records in the stream");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "TCP health and DNS elements");
        }
    }

    // DuckDB over the current and the rotated, gzipped files.
    let names = files(logs.path());
    let gz = names
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .count();
    assert!(gz >= 2, "rotated and compressed: {names:?}");
    let glob = format!("{}/flows*.jsonl*", logs.path().display());
    let read = format!("read_json('{glob}', format='newline_delimited', union_by_name=true)");
    let totals = duckdb(&format!(
        "select count(*), sum(packets)::bigint, sum(bytes)::bigint from {read}"
    ));
    assert_eq!(totals[0], serde_json::json!([3000, packets, bytes]));
    let flows = duckdb(&format!(
        "select src_ip, dst_ip, packets, bytes from {read} order by all"
    ));
    let mut want_json: Vec<(String, String, u64, u64)> = want
        .iter()
        .map(|(s, d, _, p, b)| (s.clone(), d.clone(), *p, *b))
        .collect();
    want_json.sort();
    let got: Vec<(String, String, u64, u64)> = flows
        .iter()
        .map(|r| serde_json::from_value(r.clone()).unwrap())
        .collect();
    assert_eq!(got, want_json, "DuckDB: the same flows");
    let mut by_ns: BTreeMap<String, u64> = BTreeMap::new();
    for r in &recs {
        let ns = r.src.identity.as_ref().and_then(|i| i.namespace.clone());
        *by_ns
            .entry(ns.unwrap_or_else(|| "NULL".into()))
            .or_default() += r.bytes;
    }
    let got_ns = duckdb(&format!(
        "select coalesce(src_namespace, 'NULL'), sum(bytes)::bigint from {read} group by 1 order by 1"
    ));
    let got_ns: BTreeMap<String, u64> = got_ns
        .iter()
        .map(|r| serde_json::from_value(r.clone()).unwrap())
        .collect();
    assert_eq!(got_ns, by_ns, "DuckDB: bytes by source namespace");
}

/// A flow's ports, start, TCP health and DNS as the IPFIX elements carry them:
/// ((src port, dst port, start ms), (retransmits, resets, srtt µs, handshake µs),
/// (DNS id, query, qtype, rcode, answers, DNS latency µs)). Absent numbers are 0,
/// strings "".
type TcpDns = (
    (u64, u64, u64),
    (u64, u64, u64, u64),
    (u64, String, String, String, String, u64),
);

fn tcp_and_dns_truth(recs: &[FlowRecord]) -> Vec<TcpDns> {
    let mut v: Vec<TcpDns> = recs
        .iter()
        .map(|r| {
            let t = r.tcp.unwrap_or_default();
            let d = r.dns.clone().unwrap_or_default();
            (
                (
                    u64::from(r.src.port.unwrap_or(0)),
                    u64::from(r.dst.port.unwrap_or(0)),
                    r.interval_start.timestamp_millis() as u64,
                ),
                (
                    u64::from(t.retransmits),
                    u64::from(t.resets),
                    t.srtt_us.unwrap_or(0),
                    t.handshake_us.unwrap_or(0),
                ),
                (
                    u64::from(d.id),
                    d.query.unwrap_or_default(),
                    d.qtype.unwrap_or_default(),
                    d.rcode.unwrap_or_default(),
                    d.answers.join(","),
                    d.latency_us.unwrap_or(0),
                ),
            )
        })
        .collect();
    v.sort();
    // The workload has both, or the comparison would prove little.
    let srtt = recs
        .iter()
        .filter(|r| r.tcp.is_some_and(|t| t.srtt_us.is_some()))
        .count();
    let answered = recs
        .iter()
        .filter(|r| r.dns.as_ref().is_some_and(|d| d.rcode.is_some()))
        .count();
    assert!(
        srtt > 100 && answered > 10,
        "srtt {srtt}, DNS answers {answered}"
    );
    v
}

/// The same, decoded from the IPFIX messages by the testkit's RFC 7011 reader.
fn tcp_and_dns(messages: &Messages) -> Vec<TcpDns> {
    use flowlake_collector::sink::ipfix::elements::{flowlake_id as f, iana_id as i};
    const PEN: u32 = 32473;
    let mut reader = flowlake_testkit::ipfix::Reader::default();
    let mut v = Vec::new();
    for m in messages.lock().unwrap().iter() {
        for d in reader.read(m).1 {
            let n = |id, pen| flowlake_testkit::ipfix::unsigned(&d[&(id, pen)]);
            let e = |id| n(id, PEN);
            let s = |id| String::from_utf8(d[&(id, PEN)].clone()).unwrap();
            v.push((
                (
                    n(i::SOURCE_TRANSPORT_PORT, 0),
                    n(i::DESTINATION_TRANSPORT_PORT, 0),
                    n(i::FLOW_START_MILLISECONDS, 0),
                ),
                (
                    e(f::TCP_RETRANSMITS),
                    e(f::TCP_RESETS),
                    e(f::TCP_SRTT_MICROSECONDS),
                    e(f::TCP_HANDSHAKE_MICROSECONDS),
                ),
                (
                    e(f::DNS_ID),
                    s(f::DNS_QUERY),
                    s(f::DNS_QTYPE),
                    s(f::DNS_RCODE),
                    s(f::DNS_ANSWERS),
                    e(f::DNS_LATENCY_MICROSECONDS),
                ),
            ));
        }
    }
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipfix_over_udp_jsonl_and_ingester_agree() {
    three_sinks(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipfix_over_tcp_jsonl_and_ingester_agree() {
    three_sinks(Transport::Tcp).await;
}

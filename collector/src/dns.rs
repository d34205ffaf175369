//! DNS messages from the flow program's ring buffer: parsed with hickory-proto,
//! queries matched to responses by 5-tuple + DNS id for the latency.
//!
//! Per the schema, a query is reported on the client's `from_pod` row and its
//! response on the client's `to_pod` row; other observations carry no DNS.

use std::collections::HashMap;

use flowlake_schemas::{DnsInfo, ObservationPoint};
use hickory_proto::op::{Message, MessageType};

use crate::abi::{DnsEvent, FlowKey};

/// Identifies one query: the client side 5-tuple at one interface plus the DNS id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct QueryId {
    ifindex: u32,
    client: ([u8; 16], u16),
    server: ([u8; 16], u16),
    proto: u8,
    id: u16,
}

/// Matches queries to responses and holds the DNS infos until their flow rows
/// are built.
#[derive(Debug, Default)]
pub struct DnsTracker {
    pending: HashMap<QueryId, u64>,
    /// Infos waiting for their flow row, by flow key.
    infos: HashMap<FlowKey, Vec<DnsInfo>>,
}

/// Response code name as in the `dns_rcode` column.
pub fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => n.to_string(),
    }
}

/// A parsed DNS message (query or response) without the matching.
pub fn parse(payload: &[u8], tcp: bool) -> Option<(bool, DnsInfo)> {
    let body = if tcp { payload.get(2..)? } else { payload };
    let msg = Message::from_vec(body).ok()?;
    let q = msg.queries.first();
    let is_response = msg.metadata.message_type == MessageType::Response;
    let info = DnsInfo {
        id: msg.metadata.id,
        query: q.map(|q| q.name.to_utf8().trim_end_matches('.').to_string()),
        qtype: q.map(|q| q.query_type.to_string()),
        rcode: is_response.then(|| rcode_name(u16::from(msg.metadata.response_code))),
        answers: msg.answers.iter().map(|r| r.data.to_string()).collect(),
        latency_us: None,
    };
    Some((is_response, info))
}

impl DnsTracker {
    /// Handles one event seen at `point`. Returns false when it did not parse.
    pub fn observe(&mut self, ev: &DnsEvent, point: ObservationPoint) -> bool {
        let tcp = ev.key.proto == 6;
        let Some((is_response, mut info)) = parse(ev.payload(), tcp) else {
            // An empty TCP segment (handshake, ACK) is not a parse failure.
            return ev.dns_len == 0;
        };
        let k = &ev.key;
        match (is_response, point) {
            (false, ObservationPoint::FromPod) => {
                let id = QueryId {
                    ifindex: k.ifindex,
                    client: (k.src_ip, k.src_port),
                    server: (k.dst_ip, k.dst_port),
                    proto: k.proto,
                    id: info.id,
                };
                self.pending.insert(id, ev.ts_ns);
            }
            (true, ObservationPoint::ToPod) => {
                let id = QueryId {
                    ifindex: k.ifindex,
                    client: (k.dst_ip, k.dst_port),
                    server: (k.src_ip, k.src_port),
                    proto: k.proto,
                    id: info.id,
                };
                if let Some(sent) = self.pending.remove(&id) {
                    info.latency_us = Some(ev.ts_ns.saturating_sub(sent) / 1000);
                }
            }
            _ => return true,
        }
        self.infos.entry(ev.key).or_default().push(info);
        true
    }

    /// Takes the infos of one flow row.
    pub fn take(&mut self, key: &FlowKey) -> Vec<DnsInfo> {
        self.infos.remove(key).unwrap_or_default()
    }

    /// Takes every remaining info (flushed as zero-packet rows) and forgets
    /// queries older than `cutoff_ns`.
    pub fn take_all(&mut self, cutoff_ns: u64) -> Vec<(FlowKey, DnsInfo)> {
        self.pending.retain(|_, ts| *ts >= cutoff_ns);
        self.infos
            .drain()
            .flat_map(|(k, v)| v.into_iter().map(move |i| (k, i)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(id: u16, name: &str) -> Vec<u8> {
        let mut b = vec![
            (id >> 8) as u8,
            id as u8,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        for label in name.split('.') {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.extend_from_slice(&[0, 0, 1, 0, 1]);
        b
    }

    fn event(key: FlowKey, ts: u64, payload: &[u8]) -> DnsEvent {
        let mut data = [0u8; crate::abi::DNS_MAX];
        data[..payload.len()].copy_from_slice(payload);
        DnsEvent {
            key,
            ts_ns: ts,
            pkt_len: 0,
            dns_len: payload.len() as u16,
            pad: 0,
            data,
        }
    }

    #[test]
    fn matches_query_and_nxdomain_response() {
        let q = query_bytes(0x1234, "nope.example");
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x83; // QR, RD, RA, rcode 3
        let qk = FlowKey {
            src_ip: [1; 16],
            dst_ip: [2; 16],
            src_port: 40000,
            dst_port: 53,
            proto: 17,
            ip_version: 6,
            ifindex: 5,
            ..Default::default()
        };
        let rk = FlowKey {
            src_ip: qk.dst_ip,
            dst_ip: qk.src_ip,
            src_port: 53,
            dst_port: 40000,
            direction: 1,
            ..qk
        };
        let mut t = DnsTracker::default();
        assert!(t.observe(&event(qk, 1_000_000, &q), ObservationPoint::FromPod));
        assert!(t.observe(&event(rk, 3_500_000, &r), ObservationPoint::ToPod));
        let query = t.take(&qk);
        assert_eq!(query[0].query.as_deref(), Some("nope.example"));
        assert_eq!(query[0].qtype.as_deref(), Some("A"));
        assert_eq!(query[0].rcode, None);
        let resp = t.take(&rk);
        assert_eq!(resp[0].rcode.as_deref(), Some("NXDOMAIN"));
        assert_eq!(resp[0].latency_us, Some(2500));
        assert!(!t.observe(&event(qk, 0, b"garbage!"), ObservationPoint::FromPod));
    }
}

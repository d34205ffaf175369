//! DNS messages from the flow program's ring buffer: parsed with hickory-proto,
//! queries matched to responses by 5-tuple + DNS id for the latency.
//!
//! Per the schema, DNS goes on the client's rows only: the query on the row
//! where it leaves the client (a pod's `from_pod`; for the node's own
//! sockets — source a node address — `to_network`, or `to_pod` when the
//! server is a pod of this node), the response on the row where it reaches
//! the client (`to_pod`; for the node, `from_network` or `from_pod`). Other
//! observations carry no DNS. TCP messages are reassembled from their
//! segments by sequence number. A message that cannot be read is a counted
//! loss with its reason ([`DnsLoss`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use flowlake_schemas::{DnsInfo, ObservationPoint};
use hickory_proto::op::{Message, MessageType};

use crate::abi::{self, DnsEvent, FlowKey};

/// Identifies one query: the client side 5-tuple at one interface plus the DNS id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct QueryId {
    ifindex: u32,
    client: ([u8; 16], u16),
    server: ([u8; 16], u16),
    proto: u8,
    id: u16,
}

/// Why a DNS message on a client's row was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsLoss {
    /// The packet carried more than was copied (over `FLK_DNS_MAX`, or an IP
    /// fragment of a larger datagram).
    Truncated,
    /// The bytes are not a DNS message.
    Unparsed,
    /// TCP bytes of the stream were not seen (a segment missed).
    TcpGap,
}

/// A TCP stream being reassembled: the next sequence number expected and
/// the bytes not yet framed into messages.
#[derive(Debug)]
struct Stream {
    next_seq: u32,
    buf: Vec<u8>,
    last_ns: u64,
}

/// Matches queries to responses and holds the DNS infos until their flow rows
/// are built.
#[derive(Debug, Default)]
pub struct DnsTracker {
    pending: HashMap<QueryId, u64>,
    /// Infos waiting for their flow row, by flow key.
    infos: HashMap<FlowKey, Vec<DnsInfo>>,
    streams: HashMap<FlowKey, Stream>,
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
pub fn parse(body: &[u8]) -> Option<(bool, DnsInfo)> {
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

/// Which client row a packet is on: the query's (`Some(false)`), the
/// response's (`Some(true)`), or neither (None). `local`: the node's addresses.
fn client_row(k: &FlowKey, point: ObservationPoint, local: &HashSet<IpAddr>) -> Option<bool> {
    let src = abi::ip_from_key(&k.src_ip, k.ip_version);
    let dst = abi::ip_from_key(&k.dst_ip, k.ip_version);
    let query = match point {
        ObservationPoint::FromPod => true,
        ObservationPoint::ToNetwork | ObservationPoint::ToPod => local.contains(&src),
        ObservationPoint::FromNetwork => false,
    };
    let response = match point {
        ObservationPoint::ToPod => true,
        ObservationPoint::FromNetwork | ObservationPoint::FromPod => local.contains(&dst),
        ObservationPoint::ToNetwork => false,
    };
    if query && k.dst_port == 53 {
        Some(false)
    } else if response && k.src_port == 53 {
        Some(true)
    } else {
        None
    }
}

impl Stream {
    /// Adds one segment; returns the messages it completes, or the loss.
    fn feed(&mut self, seq: u32, data: &[u8], ts: u64) -> Result<Vec<Vec<u8>>, DnsLoss> {
        let ahead = seq.wrapping_sub(self.next_seq) as i32;
        if ahead > 0 {
            return Err(DnsLoss::TcpGap);
        }
        // A retransmission: only its bytes not seen yet.
        let seen = ahead.unsigned_abs() as usize;
        let Some(new) = data.get(seen..) else {
            return Ok(Vec::new());
        };
        self.buf.extend_from_slice(new);
        self.next_seq = self.next_seq.wrapping_add(new.len() as u32);
        self.last_ns = ts;
        let mut out = Vec::new();
        while self.buf.len() >= 2 {
            let n = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            if self.buf.len() < 2 + n {
                break;
            }
            out.push(self.buf[2..2 + n].to_vec());
            self.buf.drain(..2 + n);
        }
        Ok(out)
    }
}

impl DnsTracker {
    /// Handles one event seen at `point` (`local`: the node's addresses).
    /// Returns the loss when a message on a client's row could not be read.
    pub fn observe(
        &mut self,
        ev: &DnsEvent,
        point: ObservationPoint,
        local: &HashSet<IpAddr>,
    ) -> Option<DnsLoss> {
        let k = ev.header.key;
        let is_response_row = client_row(&k, point, local)?;
        let messages = if k.proto == 6 {
            if ev.truncated() {
                self.streams.remove(&k);
                return Some(DnsLoss::Truncated);
            }
            let ts = ev.header.ts_ns;
            let stream = self.streams.entry(k).or_insert_with(|| Stream {
                next_seq: ev.header.tcp_seq,
                buf: Vec::new(),
                last_ns: ts,
            });
            match stream.feed(ev.header.tcp_seq, ev.payload(), ts) {
                Ok(m) => m,
                Err(loss) => {
                    self.streams.remove(&k);
                    return Some(loss);
                }
            }
        } else if ev.truncated() {
            return Some(DnsLoss::Truncated);
        } else {
            vec![ev.payload().to_vec()]
        };
        let mut loss = None;
        for body in messages {
            match parse(&body) {
                Some((is_response, info)) if is_response == is_response_row => {
                    self.record(&k, ev.header.ts_ns, is_response, info)
                }
                Some(_) => {}
                None => loss = Some(DnsLoss::Unparsed),
            }
        }
        loss
    }

    fn record(&mut self, k: &FlowKey, ts_ns: u64, is_response: bool, mut info: DnsInfo) {
        let (client, server) = if is_response {
            ((k.dst_ip, k.dst_port), (k.src_ip, k.src_port))
        } else {
            ((k.src_ip, k.src_port), (k.dst_ip, k.dst_port))
        };
        let id = QueryId {
            ifindex: k.ifindex,
            client,
            server,
            proto: k.proto,
            id: info.id,
        };
        if is_response {
            if let Some(sent) = self.pending.remove(&id) {
                info.latency_us = Some(ts_ns.saturating_sub(sent) / 1000);
            }
        } else {
            self.pending.insert(id, ts_ns);
        }
        self.infos.entry(*k).or_default().push(info);
    }

    /// Takes the infos of one flow row.
    pub fn take(&mut self, key: &FlowKey) -> Vec<DnsInfo> {
        self.infos.remove(key).unwrap_or_default()
    }

    /// Takes every remaining info (flushed as zero-packet rows) and forgets
    /// queries and TCP streams older than `cutoff_ns`.
    pub fn take_all(&mut self, cutoff_ns: u64) -> Vec<(FlowKey, DnsInfo)> {
        self.pending.retain(|_, ts| *ts >= cutoff_ns);
        self.streams.retain(|_, s| s.last_ns >= cutoff_ns);
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
        tcp_event(key, ts, 0, payload)
    }

    fn tcp_event(key: FlowKey, ts: u64, seq: u32, payload: &[u8]) -> DnsEvent {
        DnsEvent {
            header: crate::abi::DnsEventHeader {
                key,
                ts_ns: ts,
                dns_len: payload.len() as u16,
                payload_len: payload.len() as u32,
                tcp_seq: seq,
                ..Default::default()
            },
            data: payload.to_vec(),
        }
    }

    fn keys(proto: u8) -> (FlowKey, FlowKey) {
        let qk = FlowKey {
            src_ip: [1; 16],
            dst_ip: [2; 16],
            src_port: 40000,
            dst_port: 53,
            proto,
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
        (qk, rk)
    }

    fn response_of(q: &[u8]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x83; // QR, RD, RA, rcode 3
        r
    }

    #[test]
    fn matches_query_and_nxdomain_response() {
        let q = query_bytes(0x1234, "nope.example");
        let r = response_of(&q);
        let (qk, rk) = keys(17);
        let none = HashSet::new();
        let mut t = DnsTracker::default();
        assert_eq!(
            t.observe(&event(qk, 1_000_000, &q), ObservationPoint::FromPod, &none),
            None
        );
        assert_eq!(
            t.observe(&event(rk, 3_500_000, &r), ObservationPoint::ToPod, &none),
            None
        );
        let query = t.take(&qk);
        assert_eq!(query[0].query.as_deref(), Some("nope.example"));
        assert_eq!(query[0].qtype.as_deref(), Some("A"));
        assert_eq!(query[0].rcode, None);
        let resp = t.take(&rk);
        assert_eq!(resp[0].rcode.as_deref(), Some("NXDOMAIN"));
        assert_eq!(resp[0].latency_us, Some(2500));
        let garbage = event(qk, 0, b"garbage!");
        assert_eq!(
            t.observe(&garbage, ObservationPoint::FromPod, &none),
            Some(DnsLoss::Unparsed)
        );
        // The server's side of the same packets: not a client row.
        assert_eq!(t.observe(&garbage, ObservationPoint::ToPod, &none), None);
        let mut cut = event(rk, 0, &r[..20]);
        cut.header.payload_len = r.len() as u32;
        assert_eq!(
            t.observe(&cut, ObservationPoint::ToPod, &none),
            Some(DnsLoss::Truncated)
        );
    }

    #[test]
    fn node_queries_are_on_the_node_rows() {
        let q = query_bytes(7, "node.example");
        let (qk, rk) = keys(17);
        let node: HashSet<IpAddr> = [abi::ip_from_key(&qk.src_ip, 6)].into();
        let mut t = DnsTracker::default();
        t.observe(&event(qk, 1_000, &q), ObservationPoint::ToNetwork, &node);
        t.observe(
            &event(rk, 9_000, &response_of(&q)),
            ObservationPoint::FromNetwork,
            &node,
        );
        assert_eq!(t.take(&qk).len(), 1);
        assert_eq!(t.take(&rk)[0].latency_us, Some(8));
        // A pod's query routed out of a node interface is not the node's.
        t.observe(
            &event(qk, 1_000, &q),
            ObservationPoint::ToNetwork,
            &HashSet::new(),
        );
        assert!(t.take(&qk).is_empty());
    }

    #[test]
    fn tcp_messages_reassembled_across_segments() {
        let q = query_bytes(0x4242, "split.example");
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let (qk, _) = keys(6);
        let none = HashSet::new();
        let mut t = DnsTracker::default();
        let p = ObservationPoint::FromPod;
        assert_eq!(
            t.observe(&tcp_event(qk, 1, 100, &framed[..1]), p, &none),
            None
        );
        assert_eq!(
            t.observe(&tcp_event(qk, 2, 101, &framed[1..9]), p, &none),
            None
        );
        // A retransmission overlapping what was seen, then the rest.
        assert_eq!(
            t.observe(&tcp_event(qk, 3, 101, &framed[1..9]), p, &none),
            None
        );
        assert!(t.take(&qk).is_empty());
        assert_eq!(
            t.observe(&tcp_event(qk, 4, 105, &framed[5..]), p, &none),
            None
        );
        let got = t.take(&qk);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].query.as_deref(), Some("split.example"));
        // A segment after a hole: the stream is lost, said so.
        let next = 100 + framed.len() as u32;
        assert_eq!(
            t.observe(&tcp_event(qk, 5, next + 10, &framed), p, &none),
            Some(DnsLoss::TcpGap)
        );
    }
}

//! IPFIX message encoding (RFC 7011): message header, the template set, data sets
//! of flow records packed up to a maximum message size.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use flowlake_schemas::{FlowRecord, Identity, Protocol, Verdict};

use super::elements::{self, Field, TEMPLATE_V4, TEMPLATE_V6};

const VERSION: u16 = 10;
const HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;
const TEMPLATE_SET_ID: u16 = 2;

/// One complete IPFIX message and the data records in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub bytes: Vec<u8>,
    pub records: u64,
}

/// A record larger than a message can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Packs records into messages of one observation domain, numbering them.
pub struct Encoder {
    domain: u32,
    enterprise: u32,
    max_len: usize,
    /// Data records sent before the open message (the header's sequence number).
    seq: u32,
    buf: Vec<u8>,
    records: u64,
    /// Template id and start offset of the data set being filled.
    set: Option<(u16, usize)>,
    scratch: Vec<u8>,
}

impl Encoder {
    /// `max_len`: largest message (UDP: what fits a datagram on the path; at most 65535).
    pub fn new(domain: u32, enterprise: u32, max_len: usize) -> Self {
        Encoder {
            domain,
            enterprise,
            max_len: max_len.clamp(256, 65_535),
            seq: 0,
            buf: Vec::new(),
            records: 0,
            set: None,
            scratch: Vec::with_capacity(512),
        }
    }

    /// A message holding the template set with both templates.
    pub fn templates(&self, now: DateTime<Utc>) -> Vec<u8> {
        let mut m = Vec::with_capacity(300);
        header(&mut m, now);
        let set_start = m.len();
        put16(&mut m, TEMPLATE_SET_ID);
        put16(&mut m, 0);
        for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
            let fields = elements::template(v6);
            put16(&mut m, id);
            put16(&mut m, fields.len() as u16);
            for Field {
                id,
                len,
                enterprise,
            } in fields
            {
                if enterprise {
                    put16(&mut m, id | 0x8000);
                    put16(&mut m, len);
                    m.extend_from_slice(&self.enterprise.to_be_bytes());
                } else {
                    put16(&mut m, id);
                    put16(&mut m, len);
                }
            }
        }
        let set_len = (m.len() - set_start) as u16;
        m[set_start + 2..set_start + 4].copy_from_slice(&set_len.to_be_bytes());
        self.close_message(&mut m, self.seq);
        m
    }

    /// Adds a record; returns the previous message when the record did not fit in it.
    pub fn push(
        &mut self,
        r: &FlowRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, TooLarge> {
        let template = if r.src.ip.is_ipv6() || r.dst.ip.is_ipv6() {
            TEMPLATE_V6
        } else {
            TEMPLATE_V4
        };
        self.scratch.clear();
        encode_record(r, &mut self.scratch);
        let new_set = self.set.map(|(t, _)| t) != Some(template);
        let need = self.scratch.len() + if new_set { SET_HEADER_LEN } else { 0 };
        if HEADER_LEN + SET_HEADER_LEN + self.scratch.len() > self.max_len {
            return Err(TooLarge);
        }
        let mut done = None;
        if !self.buf.is_empty() && self.buf.len() + need > self.max_len {
            done = self.finish();
        }
        if self.buf.is_empty() {
            header(&mut self.buf, now);
        }
        if self.set.map(|(t, _)| t) != Some(template) {
            self.close_set();
            self.set = Some((template, self.buf.len()));
            put16(&mut self.buf, template);
            put16(&mut self.buf, 0);
        }
        self.buf.extend_from_slice(&self.scratch);
        self.records += 1;
        Ok(done)
    }

    /// The open message, if it holds any record.
    pub fn finish(&mut self) -> Option<Message> {
        if self.records == 0 {
            return None;
        }
        self.close_set();
        let mut bytes = std::mem::take(&mut self.buf);
        self.close_message(&mut bytes, self.seq);
        let records = std::mem::take(&mut self.records);
        self.seq = self.seq.wrapping_add(records as u32);
        Some(Message { bytes, records })
    }

    fn close_set(&mut self) {
        if let Some((_, start)) = self.set.take() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn close_message(&self, m: &mut [u8], seq: u32) {
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m[8..12].copy_from_slice(&seq.to_be_bytes());
        m[12..16].copy_from_slice(&self.domain.to_be_bytes());
    }
}

/// Header with version and export time; length, sequence and domain come at the close.
fn header(m: &mut Vec<u8>, now: DateTime<Utc>) {
    put16(m, VERSION);
    put16(m, 0);
    m.extend_from_slice(&(now.timestamp().max(0) as u32).to_be_bytes());
    m.extend_from_slice(&[0; 8]);
}

fn put16(m: &mut Vec<u8>, v: u16) {
    m.extend_from_slice(&v.to_be_bytes());
}

fn put_ip(m: &mut Vec<u8>, ip: IpAddr, v6: bool) {
    match (ip, v6) {
        (IpAddr::V4(a), false) => m.extend_from_slice(&a.octets()),
        (IpAddr::V4(a), true) => m.extend_from_slice(&a.to_ipv6_mapped().octets()),
        (IpAddr::V6(a), _) => m.extend_from_slice(&a.octets()),
    }
}

/// A variable-length string (RFC 7011 §7): one length octet, or 255 and two.
fn put_str(m: &mut Vec<u8>, s: Option<&str>) {
    let s = s.unwrap_or("").as_bytes();
    let s = &s[..s.len().min(u16::MAX as usize)];
    if s.len() < 255 {
        m.push(s.len() as u8);
    } else {
        m.push(255);
        put16(m, s.len() as u16);
    }
    m.extend_from_slice(s);
}

/// One data record in the order of [`elements::template`].
fn encode_record(r: &FlowRecord, m: &mut Vec<u8>) {
    let v6 = r.src.ip.is_ipv6() || r.dst.ip.is_ipv6();
    m.extend_from_slice(&(r.interval_start.timestamp_millis().max(0) as u64).to_be_bytes());
    m.extend_from_slice(&(r.interval_end.timestamp_millis().max(0) as u64).to_be_bytes());
    put_ip(m, r.src.ip, v6);
    put_ip(m, r.dst.ip, v6);
    put16(m, r.src.port.unwrap_or(0));
    put16(m, r.dst.port.unwrap_or(0));
    m.push(r.protocol.number());
    put16(m, r.tcp_flags.unwrap_or(0));
    let icmp = match (r.protocol, r.icmp) {
        (Protocol::Icmp | Protocol::Icmpv6, Some((t, c))) => u16::from_be_bytes([t, c]),
        _ => 0,
    };
    put16(m, icmp);
    m.extend_from_slice(&r.bytes.to_be_bytes());
    m.extend_from_slice(&r.packets.to_be_bytes());
    let dropped = r.verdict == Verdict::Dropped;
    m.push(elements::forwarding_status(
        dropped,
        r.drop_reason.as_deref(),
    ));
    m.push(match r.direction() {
        flowlake_schemas::Direction::Ingress => 0,
        flowlake_schemas::Direction::Egress => 1,
    });
    put_str(m, r.interface.as_deref());
    put_str(m, Some(&r.cluster));
    put_str(m, Some(&r.node));
    put_str(m, Some(r.observation_point.as_str()));
    put_str(m, r.drop_reason.as_deref());
    for end in [&r.src, &r.dst] {
        let id = end.identity.as_deref();
        let f = |pick: fn(&Identity) -> &Option<String>| id.and_then(|i| pick(i).as_deref());
        put_str(m, f(|i| &i.namespace));
        put_str(m, f(|i| &i.pod));
        put_str(m, f(|i| &i.workload));
        put_str(m, f(|i| &i.workload_kind));
        put_str(m, f(|i| &i.node));
        put_str(m, f(|i| &i.service));
    }
    let tcp = r.tcp.unwrap_or_default();
    m.extend_from_slice(&tcp.retransmits.to_be_bytes());
    m.extend_from_slice(&tcp.resets.to_be_bytes());
    m.extend_from_slice(&tcp.srtt_us.unwrap_or(0).to_be_bytes());
    m.extend_from_slice(&tcp.handshake_us.unwrap_or(0).to_be_bytes());
    let dns = r.dns.as_ref();
    put16(m, dns.map_or(0, |d| d.id));
    put_str(m, dns.and_then(|d| d.query.as_deref()));
    put_str(m, dns.and_then(|d| d.qtype.as_deref()));
    put_str(m, dns.and_then(|d| d.rcode.as_deref()));
    put_str(m, dns.map(|d| d.answers.join(",")).as_deref());
    m.extend_from_slice(&dns.and_then(|d| d.latency_us).unwrap_or(0).to_be_bytes());
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;

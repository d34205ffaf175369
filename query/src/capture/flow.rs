//! One flow's packets out of capture files: a 5-tuple (`tcp 10.0.0.1:1234
//! 10.0.0.2:80`, IPv6 as `[fd00::1]:80`), matched in both directions, and
//! the pcapng blocks of a file kept or dropped by it. Every block that is not
//! a packet (sections, interfaces, statistics) is kept as written, so the
//! result names the same pods and counts the same drops.

use std::net::{IpAddr, SocketAddr};

use crate::error::{QueryError, Result};

/// A flow's protocol and its two ends (ports 0 for ICMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    pub a: SocketAddr,
    pub b: SocketAddr,
}

fn protocol_number(name: &str) -> Option<u8> {
    Some(match name {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        "icmp6" | "icmpv6" => 58,
        _ => return None,
    })
}

/// The protocol's name as the flow table writes it.
pub fn protocol_name(n: u8) -> &'static str {
    match n {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        1 => "icmp",
        58 => "icmpv6",
        _ => "other",
    }
}

fn end(s: &str, ported: bool) -> Option<SocketAddr> {
    if ported {
        s.parse().ok()
    } else {
        let ip: IpAddr = s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        Some(SocketAddr::new(ip, 0))
    }
}

impl std::str::FromStr for FlowKey {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            QueryError::BadRequest(format!(
                "bad flow {s:?}: expected `PROTO SRC:PORT DST:PORT` (tcp, udp, sctp; \
                 `icmp A B` without ports; IPv6 as [addr]:port)"
            ))
        };
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [proto, a, b] = parts[..] else {
            return Err(bad());
        };
        let protocol = protocol_number(&proto.to_ascii_lowercase()).ok_or_else(bad)?;
        let ported = matches!(protocol, 6 | 17 | 132);
        let (a, b) = (
            end(a, ported).ok_or_else(bad)?,
            end(b, ported).ok_or_else(bad)?,
        );
        if a.is_ipv4() != b.is_ipv4() {
            return Err(bad());
        }
        Ok(FlowKey { protocol, a, b })
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", protocol_name(self.protocol), self.a, self.b)
    }
}

/// The protocol and ends of an Ethernet frame (VLAN tags skipped); `None`
/// when it is not IP or too short. IPv4 later fragments and IPv6 extension
/// headers carry no ports here, as in the capture filter.
fn ends_of(frame: &[u8]) -> Option<(u8, SocketAddr, SocketAddr)> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        off += 4;
        ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
    }
    let ip = frame.get(off + 2..)?;
    let (proto, src, dst, l4, first) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let frag = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?) & 0x1fff;
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                *ip.get(9)?,
                IpAddr::from(src),
                IpAddr::from(dst),
                ihl,
                frag == 0,
            )
        }
        0x86dd => {
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (*ip.get(6)?, IpAddr::from(src), IpAddr::from(dst), 40, true)
        }
        _ => return None,
    };
    let ports = if matches!(proto, 6 | 17 | 132) && first {
        let p = ip.get(l4..l4 + 4)?;
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    } else {
        (0, 0)
    };
    Some((
        proto,
        SocketAddr::new(src, ports.0),
        SocketAddr::new(dst, ports.1),
    ))
}

impl FlowKey {
    /// Whether an Ethernet frame belongs to this flow, in either direction.
    pub fn matches(&self, frame: &[u8]) -> bool {
        let Some((proto, src, dst)) = ends_of(frame) else {
            return false;
        };
        proto == self.protocol
            && ((src == self.a && dst == self.b) || (src == self.b && dst == self.a))
    }
}

const SHB: u32 = 0x0a0d_0d0a;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

fn u32_le(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// The blocks of a little-endian pcapng file (one or more sections), as
/// (type, whole block); an error when it is not one.
pub fn blocks(data: &[u8]) -> Result<Vec<(u32, &[u8])>> {
    let bad = |why: &str| QueryError::Config(format!("not a capture file: {why}"));
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let kind = u32_le(data, off).ok_or_else(|| bad("truncated block"))?;
        let len = u32_le(data, off + 4).ok_or_else(|| bad("truncated block"))? as usize;
        if len < 12 || !len.is_multiple_of(4) || off + len > data.len() {
            return Err(bad("bad block length"));
        }
        if (kind == SHB && u32_le(data, off + 8) != Some(BYTE_ORDER_MAGIC))
            || (off == 0 && kind != SHB)
        {
            return Err(bad("not a little-endian pcapng section"));
        }
        out.push((kind, &data[off..off + len]));
        off += len;
    }
    Ok(out)
}

/// `data` with only the packets of `flow` (every other block kept); and the
/// number of packets kept.
pub fn only_flow(data: &[u8], flow: &FlowKey) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::with_capacity(data.len() / 4);
    let mut kept = 0;
    for (kind, block) in blocks(data)? {
        if kind == EPB {
            let caplen = u32_le(block, 20).unwrap_or(0) as usize;
            let frame = block.get(28..28 + caplen).unwrap_or_default();
            if !flow.matches(frame) {
                continue;
            }
            kept += 1;
        }
        out.extend_from_slice(block);
    }
    Ok((out, kept))
}

/// Node files as one pcapng: each file is a section of its own (its section
/// header, interfaces, packets and statistics), one after another.
pub fn merge<'a>(files: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for f in files {
        blocks(f)?;
        out.extend_from_slice(f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use flowlake_schemas::capture::pcapng::{self, Direction, InterfaceInfo, Writer};

    use super::*;

    /// An Ethernet/IPv4/TCP or UDP frame.
    fn frame(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f
    }

    #[test]
    fn flows_parse_and_match_both_directions_only() {
        let k: FlowKey = "tcp 10.0.0.1:1234 10.0.0.2:80".parse().unwrap();
        assert_eq!(k.to_string(), "tcp 10.0.0.1:1234 10.0.0.2:80");
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        assert!(k.matches(&frame(6, a, 1234, b, 80)));
        assert!(k.matches(&frame(6, b, 80, a, 1234)));
        assert!(!k.matches(&frame(17, a, 1234, b, 80)));
        assert!(!k.matches(&frame(6, a, 1235, b, 80)));
        let v6: FlowKey = "udp [fd00::1]:53 [fd00::2]:5353".parse().unwrap();
        assert_eq!(v6.protocol, 17);
        let icmp: FlowKey = "icmp 10.0.0.1 10.0.0.2".parse().unwrap();
        assert!(icmp.matches(&frame(1, b, 0, a, 0)));
        for bad in [
            "tcp 10.0.0.1 10.0.0.2:80",
            "gre 1.1.1.1:1 2.2.2.2:2",
            "tcp",
            "",
        ] {
            assert!(bad.parse::<FlowKey>().is_err(), "{bad}");
        }
        assert!("tcp 10.0.0.1:1 [fd00::1]:2".parse::<FlowKey>().is_err());
    }

    fn file(node: &str, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &[format!("capture c1 on node {node}")]).unwrap();
        let i = w
            .interface(&InterfaceInfo {
                name: format!("shop/web@{node}"),
                description: String::new(),
                snaplen: 262_144,
            })
            .unwrap();
        for (n, f) in frames.iter().enumerate() {
            w.packet(i, n as u64, f.len() as u32, f, Direction::Inbound)
                .unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn only_the_flows_packets_stay_and_files_merge_as_sections() {
        let (a, b, c) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
        let frames = [
            frame(6, a, 1234, b, 80),
            frame(6, c, 1234, b, 80),
            frame(6, b, 80, a, 1234),
        ];
        let data = file("node-a", &frames);
        let k: FlowKey = "tcp 10.0.0.1:1234 10.0.0.2:80".parse().unwrap();
        let (kept, n) = only_flow(&data, &k).unwrap();
        assert_eq!(n, 2);
        let read = pcapng::read::parse(&kept).unwrap();
        assert_eq!(read.interfaces[0].name, "shop/web@node-a");
        let got: Vec<&Vec<u8>> = read.packets.iter().map(|p| &p.data).collect();
        assert_eq!(got, [&frames[0], &frames[2]]);
        let other = file("node-b", &frames[1..2]);
        let merged = merge([data.as_slice(), other.as_slice()]).unwrap();
        assert_eq!(merged.len(), data.len() + other.len());
        assert_eq!(blocks(&merged).unwrap().len(), 2 * 2 + 3 + 1);
        assert!(blocks(&merged[4..]).is_err());
        assert!(merge([&b"not pcapng at all"[..]]).is_err());
    }
}

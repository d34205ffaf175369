//! Packets and bytes per flow tuple of a tcpdump capture file, read here
//! rather than with tshark (which takes minutes to start in the kernel
//! matrix's emulated VMs). Bytes count from the IP header on, as the
//! collector does.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// (src, dst, src port, dst port, protocol), as harness.rs's `Tuple`.
type Tuple = (IpAddr, IpAddr, u16, u16, u8);

/// Reads a pcap file (microsecond or nanosecond, either byte order) and sums
/// packets and L3 bytes per (src, dst, src port, dst port, protocol).
pub fn tuples(file: &Path) -> HashMap<Tuple, (u64, u64)> {
    let mut m: HashMap<Tuple, (u64, u64)> = HashMap::new();
    for (t, _, wire) in packets(file) {
        let e = m.entry(t).or_default();
        e.0 += 1;
        e.1 += wire;
    }
    m
}

/// TCP segments with RST per tuple of a pcap file.
pub fn resets(file: &Path) -> HashMap<Tuple, u64> {
    let mut m: HashMap<Tuple, u64> = HashMap::new();
    for (t, flags, _) in packets(file) {
        if t.4 == 6 && flags & 0x04 != 0 {
            *m.entry(t).or_default() += 1;
        }
    }
    m
}

/// Every IP packet of a pcap file: its tuple, TCP flags (0 for others) and
/// L3 length on the wire.
fn packets(file: &Path) -> Vec<(Tuple, u8, u64)> {
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut m = Vec::new();
    if data.len() < 24 {
        return m; // tcpdump stopped before writing its header: nothing captured
    }
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => panic!("{}: not a pcap file (magic {other:#x})", file.display()),
    };
    let u32_at = |b: &[u8], off: usize| {
        let w: [u8; 4] = b[off..off + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link_header = match u32_at(&data, 20) {
        1 => 14,                   // Ethernet
        12 | 101 | 228 | 229 => 0, // raw IP (tun, wireguard)
        113 => 16,                 // Linux cooked
        276 => 20,                 // Linux cooked v2
        other => panic!("{}: link type {other} not handled", file.display()),
    };
    let mut off = 24;
    while off + 16 <= data.len() {
        let caught = u32_at(&data, off + 8) as usize;
        let wire = u64::from(u32_at(&data, off + 12));
        let pkt = &data[off + 16..(off + 16 + caught).min(data.len())];
        off += 16 + caught;
        if let Some((t, flags)) = pkt.get(link_header..).and_then(tuple) {
            m.push((t, flags, wire - link_header as u64));
        }
    }
    m
}

/// The flow tuple of an IP packet (ports 0 for ICMP and later fragments)
/// and its TCP flags (0 when not TCP).
fn tuple(ip: &[u8]) -> Option<(Tuple, u8)> {
    let (src, dst, mut proto, mut l4, first_fragment): (IpAddr, IpAddr, u8, usize, bool) =
        match ip.first()? >> 4 {
            4 if ip.len() >= 20 => {
                let a =
                    |o: usize| IpAddr::V4(Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]));
                let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
                (a(12), a(16), ip[9], usize::from(ip[0] & 0xf) * 4, frag == 0)
            }
            6 if ip.len() >= 40 => {
                let a = |o: usize| {
                    IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(&ip[o..o + 16]).unwrap(),
                    ))
                };
                (a(8), a(24), ip[6], 40, true)
            }
            _ => return None,
        };
    let mut first = first_fragment;
    // IPv6 extension headers: hop-by-hop, routing, fragment, destination options.
    while matches!(proto, 0 | 43 | 44 | 60) && ip.len() >= l4 + 8 {
        let next = ip[l4];
        if proto == 44 {
            first &= u16::from_be_bytes([ip[l4 + 2], ip[l4 + 3]]) & 0xfff8 == 0;
            l4 += 8;
        } else {
            l4 += (usize::from(ip[l4 + 1]) + 1) * 8;
        }
        proto = next;
    }
    let ports = match proto {
        6 | 17 | 132 if first && ip.len() >= l4 + 4 => (
            u16::from_be_bytes([ip[l4], ip[l4 + 1]]),
            u16::from_be_bytes([ip[l4 + 2], ip[l4 + 3]]),
        ),
        _ => (0, 0),
    };
    let flags = match proto {
        6 if first => ip.get(l4 + 13).copied().unwrap_or(0),
        _ => 0,
    };
    Some(((src, dst, ports.0, ports.1, proto), flags))
}

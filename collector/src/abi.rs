//! Rust mirrors of `ebpf/flowlake.h`. Every struct carries compile-time size and
//! offset assertions so the C and Rust sides never drift apart.

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// tc hook direction (`FLK_DIR_*`).
pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;
/// Bytes of DNS payload copied per packet at most (`FLK_DNS_MAX`).
pub const DNS_MAX: usize = 4096;

/// Slots of the per-CPU `losses` array (`FLK_LOSS_*`).
pub const LOSS_FLOW_MAP_FULL: u32 = 0;
pub const LOSS_DNS_RINGBUF_FULL: u32 = 1;
pub const LOSS_DROP_MAP_FULL: u32 = 2;
pub const LOSS_TCP_MAP_FULL: u32 = 3;
/// Bytes of the packets counted in `LOSS_FLOW_MAP_FULL`.
pub const LOSS_FLOW_MAP_FULL_BYTES: u32 = 4;
pub const LOSS_SLOTS: u32 = 5;

/// `drop_key.reason` on kernels without drop reasons (before 5.17).
pub const DROP_REASON_UNKNOWN: u32 = 0xffff_ffff;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub ip_version: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub ifindex: u32,
    pub direction: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    pub first_jiffies: u64,
    pub last_jiffies: u64,
    pub handshake_us: u32,
    pub tcp_flags: u32,
    /// TCP segments with RST.
    pub resets: u32,
    pub pad: u32,
    /// Packets on the wire: `max(1, gso_segs)` per kernel buffer, so a GSO or
    /// GRO super-packet counts its segments (`packets` counts it once).
    pub wire_packets: u64,
}

impl FlowStats {
    /// Merges entries of one key (flows map entry, flow cache slots of each CPU):
    /// packets, wire packets and bytes summed, flags ORed, the earliest first time of the
    /// copies that saw packets, the latest last time, the largest handshake.
    pub fn merge(copies: &[FlowStats]) -> FlowStats {
        let mut out = FlowStats::default();
        for c in copies {
            if c.packets > 0 && (out.packets == 0 || c.first_jiffies < out.first_jiffies) {
                out.first_jiffies = c.first_jiffies;
            }
            out.packets += c.packets;
            out.bytes += c.bytes;
            out.wire_packets += c.wire_packets;
            out.last_jiffies = out.last_jiffies.max(c.last_jiffies);
            out.handshake_us = out.handshake_us.max(c.handshake_us);
            out.tcp_flags |= c.tcp_flags;
            out.resets += c.resets;
        }
        out
    }
}

/// Slots per bank of the per-CPU flow cache (`FLK_CACHE_SLOTS`); two banks.
pub const CACHE_SLOTS: u32 = 64;

/// One slot of the flow cache (`struct flow_cache_slot`); empty when
/// `stats.packets == 0`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowCacheSlot {
    pub key: FlowKey,
    pub stats: FlowStats,
}

/// One instant read as jiffies and as boot time (`struct flk_clock_sample`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockSample {
    pub jiffies: u64,
    pub boot_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DropKey {
    pub flow: FlowKey,
    pub reason: u32,
    pub netns: u32,
    pub iif: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropStats {
    pub packets: u64,
    pub bytes: u64,
    pub last_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpKey {
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub ip_version: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpStats {
    /// Retransmitted segments.
    pub retransmits: u32,
    pub srtt_us: u32,
    pub last_jiffies: u64,
}

/// The fixed part of `struct dns_event`; its data follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsEventHeader {
    pub key: FlowKey,
    pub ts_ns: u64,
    pub pkt_len: u32,
    /// Bytes of payload copied (the data that follows).
    pub dns_len: u16,
    pub pad: u16,
    /// Payload bytes the packet carries (UDP: per its header): more than
    /// `dns_len` when the copy or the packet (a fragment) was cut.
    pub payload_len: u32,
    /// TCP: sequence number of the first payload byte.
    pub tcp_seq: u32,
}

/// A DNS packet from the ring buffer: the header and the copied payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEvent {
    pub header: DnsEventHeader,
    pub data: Vec<u8>,
}

// Layout checks against flowlake.h (x86_64 and aarch64 share this ABI).
const _: () = {
    assert!(size_of::<FlowKey>() == 48);
    assert!(offset_of!(FlowKey, dst_ip) == 16);
    assert!(offset_of!(FlowKey, src_port) == 32);
    assert!(offset_of!(FlowKey, dst_port) == 34);
    assert!(offset_of!(FlowKey, proto) == 36);
    assert!(offset_of!(FlowKey, ip_version) == 37);
    assert!(offset_of!(FlowKey, icmp_type) == 38);
    assert!(offset_of!(FlowKey, icmp_code) == 39);
    assert!(offset_of!(FlowKey, ifindex) == 40);
    assert!(offset_of!(FlowKey, direction) == 44);
    assert!(size_of::<FlowStats>() == 56);
    assert!(offset_of!(FlowStats, bytes) == 8);
    assert!(offset_of!(FlowStats, first_jiffies) == 16);
    assert!(offset_of!(FlowStats, last_jiffies) == 24);
    assert!(offset_of!(FlowStats, handshake_us) == 32);
    assert!(offset_of!(FlowStats, tcp_flags) == 36);
    assert!(offset_of!(FlowStats, resets) == 40);
    assert!(offset_of!(FlowStats, wire_packets) == 48);
    assert!(size_of::<FlowCacheSlot>() == 104);
    assert!(offset_of!(FlowCacheSlot, stats) == 48);
    assert!(size_of::<ClockSample>() == 16);
    assert!(offset_of!(ClockSample, boot_ns) == 8);
    assert!(size_of::<DropKey>() == 64);
    assert!(offset_of!(DropKey, reason) == 48);
    assert!(offset_of!(DropKey, netns) == 52);
    assert!(offset_of!(DropKey, iif) == 56);
    assert!(size_of::<DropStats>() == 24);
    assert!(offset_of!(DropStats, last_ns) == 16);
    assert!(size_of::<TcpKey>() == 40);
    assert!(offset_of!(TcpKey, src_port) == 32);
    assert!(offset_of!(TcpKey, ip_version) == 36);
    assert!(size_of::<TcpStats>() == 16);
    assert!(offset_of!(TcpStats, srtt_us) == 4);
    assert!(offset_of!(TcpStats, last_jiffies) == 8);
    assert!(size_of::<DnsEventHeader>() == 72);
    assert!(offset_of!(DnsEventHeader, ts_ns) == 48);
    assert!(offset_of!(DnsEventHeader, pkt_len) == 56);
    assert!(offset_of!(DnsEventHeader, dns_len) == 60);
    assert!(offset_of!(DnsEventHeader, payload_len) == 64);
    assert!(offset_of!(DnsEventHeader, tcp_seq) == 68);
};

// SAFETY: plain-old-data, no padding holes the kernel could leave uninitialised
// that Rust would read as invalid values (all fields are integers/arrays).
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowStats {}
unsafe impl aya::Pod for FlowCacheSlot {}
unsafe impl aya::Pod for ClockSample {}
unsafe impl aya::Pod for DropKey {}
unsafe impl aya::Pod for DropStats {}
unsafe impl aya::Pod for TcpKey {}
unsafe impl aya::Pod for TcpStats {}

/// An address as stored by the programs: IPv6, IPv4 mapped (`::ffff:a.b.c.d`).
pub fn ip_from_key(raw: &[u8; 16], version: u8) -> IpAddr {
    let v6 = Ipv6Addr::from(*raw);
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(raw[12], raw[13], raw[14], raw[15]))
    } else {
        IpAddr::V6(v6)
    }
}

/// The 4-tuple of a flow key seen from its source: what a socket calls local → remote.
pub fn tcp_key_of(key: &FlowKey) -> TcpKey {
    TcpKey {
        src_ip: key.src_ip,
        dst_ip: key.dst_ip,
        src_port: key.src_port,
        dst_port: key.dst_port,
        ip_version: key.ip_version,
        pad: [0; 3],
    }
}

impl DnsEvent {
    /// Reads an event from ring buffer bytes (None when too short).
    pub fn from_bytes(bytes: &[u8]) -> Option<DnsEvent> {
        let head = size_of::<DnsEventHeader>();
        if bytes.len() < head {
            return None;
        }
        // SAFETY: length checked; the header is repr(C) plain data valid for any bytes.
        let header = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DnsEventHeader>()) };
        let n = usize::from(header.dns_len).min(DNS_MAX);
        let data = bytes.get(head..head + n)?.to_vec();
        Some(DnsEvent { header, data })
    }

    /// The captured DNS bytes.
    pub fn payload(&self) -> &[u8] {
        &self.data
    }

    /// Whether the packet carried more payload than was copied.
    pub fn truncated(&self) -> bool {
        self.header.payload_len as usize > self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_flow_copies_merge() {
        let a = FlowStats {
            packets: 3,
            bytes: 300,
            first_jiffies: 20,
            last_jiffies: 50,
            handshake_us: 0,
            tcp_flags: 0x02,
            resets: 1,
            pad: 0,
            wire_packets: 40,
        };
        let idle = FlowStats {
            handshake_us: 7,
            ..FlowStats::default()
        };
        let b = FlowStats {
            packets: 2,
            bytes: 80,
            first_jiffies: 10,
            last_jiffies: 40,
            handshake_us: 0,
            tcp_flags: 0x10,
            resets: 2,
            pad: 0,
            wire_packets: 2,
        };
        let m = FlowStats::merge(&[idle, a, b]);
        assert_eq!(
            m,
            FlowStats {
                packets: 5,
                bytes: 380,
                first_jiffies: 10,
                last_jiffies: 50,
                handshake_us: 7,
                tcp_flags: 0x12,
                resets: 3,
                pad: 0,
                wire_packets: 42,
            }
        );
        assert_eq!(FlowStats::merge(&[a]), a);
    }

    #[test]
    fn mapped_ipv4_reads_back_as_ipv4() {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(ip_from_key(&raw, 4), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            ip_from_key(
                &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                6
            ),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct shared between the eBPF programs and the collector's userspace.
 * The Rust mirrors live in collector/src/abi.rs with compile-time size and
 * offset assertions: change both together.
 */
#ifndef FLOWLAKE_H
#define FLOWLAKE_H

#define FLK_DIR_INGRESS 0
#define FLK_DIR_EGRESS 1

/* Bytes of DNS message (L4 payload) copied to userspace per packet: EDNS's
 * usual 4096-byte limit. Events of messages up to FLK_DNS_SMALL bytes (most)
 * reserve only that much of the ring buffer. */
#define FLK_DNS_MAX 4096
#define FLK_DNS_SMALL 512

/* Indexes of the per-CPU `losses` array in every object. */
#define FLK_LOSS_FLOW_MAP_FULL 0
#define FLK_LOSS_DNS_RINGBUF_FULL 1
#define FLK_LOSS_DROP_MAP_FULL 2
#define FLK_LOSS_TCP_MAP_FULL 3
#define FLK_LOSS_FLOW_MAP_FULL_BYTES 4 /* bytes (from the IP header) of those packets */
#define FLK_LOSS_SLOTS 5

/* One direction of one flow at one tc hook. Addresses are IPv6, IPv4 mapped
 * as ::ffff:a.b.c.d. Ports in host byte order, 0 when the protocol has none. */
struct flow_key {
	__u8 src_ip[16];
	__u8 dst_ip[16];
	__u16 src_port;
	__u16 dst_port;
	__u8 proto;
	__u8 ip_version;
	__u8 icmp_type;
	__u8 icmp_code;
	__u32 ifindex;
	__u32 direction; /* FLK_DIR_*: the tc hook */
};

/* Packets of one key: a flows map entry (shared by the CPUs) or a flow cache
 * slot (one CPU). Userspace merges a key's entries: sums packets/bytes, ORs
 * flags, keeps the earliest first (of those with packets) and the latest
 * last / largest handshake_us. */
struct flow_stats {
	__u64 packets;
	__u64 bytes; /* from the IP header on */
	__u64 first_jiffies; /* bpf_jiffies64: see struct flk_clock_sample */
	__u64 last_jiffies;
	__u32 handshake_us; /* SYN -> SYN-ACK, set on the SYN direction */
	__u32 tcp_flags;
	__u32 resets; /* TCP segments with RST (they bypass the flow cache) */
	__u32 pad;
	/* Packets on the wire: per skb max(1, gso_segs), so a GSO/GRO
	 * super-packet counts its segments (`packets` counts it once). */
	__u64 wire_packets;
};

/* The per-CPU flow cache in front of the flows hash (flows.bpf.c): slots per
 * bank, two banks; index = bank * FLK_CACHE_SLOTS + slot. */
#define FLK_CACHE_SLOTS_LOG2 6
#define FLK_CACHE_SLOTS (1 << FLK_CACHE_SLOTS_LOG2)

/* One slot: a key and its packets since the slot took it (packets == 0:
 * empty). handshake_us is always 0 here. */
struct flow_cache_slot {
	struct flow_key key;
	struct flow_stats stats;
};

/* One instant read on both clocks (flows.bpf.c clock_sample): userspace
 * converts flow times from jiffies to boot time with two of these. */
struct flk_clock_sample {
	__u64 jiffies;
	__u64 boot_ns; /* bpf_ktime_get_boot_ns */
};

/* drop_key.reason on kernels without drop reasons (before 5.17). */
#define FLK_DROP_REASON_UNKNOWN 0xffffffff

/* A packet freed with a drop reason, aggregated per flow, reason and place. */
struct drop_key {
	struct flow_key flow; /* ifindex: skb->dev; direction: unused (0) */
	__u32 reason;
	__u32 netns; /* inode number of the device's network namespace */
	__u32 iif; /* skb->skb_iif: 0 for locally generated packets */
	__u32 pad;
};

struct drop_stats {
	__u64 packets;
	__u64 bytes;
	__u64 last_ns;
};

/* TCP socket health, keyed from the socket's side: src = local end. */
struct tcp_key {
	__u8 src_ip[16];
	__u8 dst_ip[16];
	__u16 src_port;
	__u16 dst_port;
	__u8 ip_version;
	__u8 pad[3];
};

struct tcp_stats {
	__u32 retransmits; /* segments: tcp_skb_pcount of each retransmitted skb */
	__u32 srtt_us; /* latest smoothed RTT, microseconds; 0 = none */
	__u64 last_jiffies; /* bpf_jiffies64, as flow times */
};

/* A DNS packet (UDP or TCP port 53) seen at a tc hook, to userspace: this
 * header and dns_len bytes of data (the record is FLK_DNS_SMALL or
 * FLK_DNS_MAX bytes of data long). */
struct dns_event {
	struct flow_key key;
	__u64 ts_ns;
	__u32 pkt_len; /* bytes from the IP header on */
	__u16 dns_len; /* bytes valid in data */
	__u16 pad;
	__u32 payload_len; /* L4 payload bytes the packet carries (UDP: per its header) */
	__u32 tcp_seq; /* TCP: sequence number of the first payload byte */
	__u8 data[FLK_DNS_MAX]; /* L4 payload (TCP: a segment of the stream) */
};

#endif

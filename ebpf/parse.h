/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4/IPv6 + L4 parser shared by the tc and the tracing programs. The file
 * including it defines FLK_LOAD(ctx, off, dst, len) -> 0 on success.
 */
#ifndef FLOWLAKE_PARSE_H
#define FLOWLAKE_PARSE_H

#include "flowlake.h"

#define FLK_ETH_P_IP 0x0800
#define FLK_ETH_P_IPV6 0x86DD
#define FLK_IPPROTO_ICMP 1
#define FLK_IPPROTO_TCP 6
#define FLK_IPPROTO_UDP 17
#define FLK_IPPROTO_ICMPV6 58
#define FLK_IPPROTO_SCTP 132
#define FLK_IPV6_EXT_MAX 6

struct flk_ipv4 {
	__u8 ver_ihl;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct flk_ipv6 {
	__u32 ver_tc_flow;
	__u16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct flk_parsed {
	__u32 l4_off; /* offset of the L4 header; 0 when absent (fragment) */
	__u32 l3_len; /* length from the IP header on, per the IP header */
	__u32 payload_off; /* TCP/UDP payload offset, 0 when unknown */
	__u16 tcp_flags;
};

static __always_inline void flk_map_v4(__u8 *dst, const __u8 *v4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, v4, 4);
}

/* Parses the L3 header at `off` (protocol from skb->protocol, network order)
 * and the L4 header after it. Returns 0 when key holds a flow. */
static __always_inline int flk_parse(void *ctx, __u32 off, __u16 proto_be, struct flow_key *key,
				     struct flk_parsed *p)
{
	__u8 l4proto;
	int has_l4 = 1;

	if (proto_be == bpf_htons(FLK_ETH_P_IP)) {
		struct flk_ipv4 ip;
		if (FLK_LOAD(ctx, off, &ip, sizeof(ip)))
			return -1;
		if ((ip.ver_ihl >> 4) != 4 || (ip.ver_ihl & 0xf) < 5)
			return -1;
		flk_map_v4(key->src_ip, ip.saddr);
		flk_map_v4(key->dst_ip, ip.daddr);
		key->ip_version = 4;
		l4proto = ip.protocol;
		p->l3_len = bpf_ntohs(ip.tot_len);
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			has_l4 = 0; /* not the first fragment */
		off += (ip.ver_ihl & 0xf) * 4;
	} else if (proto_be == bpf_htons(FLK_ETH_P_IPV6)) {
		struct flk_ipv6 ip6;
		if (FLK_LOAD(ctx, off, &ip6, sizeof(ip6)))
			return -1;
		if ((ip6.ver_tc_flow & 0xf0) != 0x60)
			return -1;
		__builtin_memcpy(key->src_ip, ip6.saddr, 16);
		__builtin_memcpy(key->dst_ip, ip6.daddr, 16);
		key->ip_version = 6;
		p->l3_len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
		l4proto = ip6.nexthdr;
		off += sizeof(ip6);
#pragma unroll
		for (int i = 0; i < FLK_IPV6_EXT_MAX; i++) {
			__u8 h[4];
			if (l4proto != 0 && l4proto != 43 && l4proto != 60 && l4proto != 51 &&
			    l4proto != 44)
				break;
			if (FLK_LOAD(ctx, off, h, sizeof(h)))
				return -1;
			if (l4proto == 44) {
				if (((h[2] << 8) | h[3]) & 0xfff8)
					has_l4 = 0;
				off += 8;
			} else if (l4proto == 51) {
				off += ((__u32)h[1] + 2) * 4;
			} else {
				off += ((__u32)h[1] + 1) * 8;
			}
			l4proto = h[0];
		}
	} else {
		return -1;
	}
	key->proto = l4proto;
	p->l4_off = has_l4 ? off : 0;
	if (!has_l4)
		return 0;

	switch (l4proto) {
	case FLK_IPPROTO_TCP: {
		__u8 th[14];
		if (FLK_LOAD(ctx, off, th, sizeof(th)))
			return 0;
		key->src_port = (th[0] << 8) | th[1];
		key->dst_port = (th[2] << 8) | th[3];
		p->tcp_flags = th[13] | ((th[12] & 1) << 8);
		p->payload_off = off + (th[12] >> 4) * 4;
		break;
	}
	case FLK_IPPROTO_UDP:
	case FLK_IPPROTO_SCTP: {
		__u8 ports[4];
		if (FLK_LOAD(ctx, off, ports, sizeof(ports)))
			return 0;
		key->src_port = (ports[0] << 8) | ports[1];
		key->dst_port = (ports[2] << 8) | ports[3];
		if (l4proto == FLK_IPPROTO_UDP)
			p->payload_off = off + 8;
		break;
	}
	case FLK_IPPROTO_ICMP:
	case FLK_IPPROTO_ICMPV6: {
		__u8 tc[2];
		if (FLK_LOAD(ctx, off, tc, sizeof(tc)))
			return 0;
		key->icmp_type = tc[0];
		key->icmp_code = tc[1];
		break;
	}
	}
	return 0;
}

/* The per-CPU loss counters every object carries. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLK_LOSS_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} losses SEC(".maps");

static __always_inline void flk_count_losses(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&losses, &slot);
	if (v)
		*v += n;
}

static __always_inline void flk_count_loss(__u32 slot)
{
	flk_count_losses(slot, 1);
}

#endif

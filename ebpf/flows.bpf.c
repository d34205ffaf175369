// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Flow aggregation at tc ingress/egress (TCX or clsact) of pod veths (host
 * side) and node interfaces. Never changes a packet's fate: always returns
 * TC_ACT_UNSPEC (== TCX_NEXT) so the CNI's programs still run.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FLK_LOAD(ctx, off, dst, len) bpf_skb_load_bytes((ctx), (off), (dst), (len))
#include "parse.h"

#define FLK_ETH_HLEN 14
#define TCP_SYN 0x02
#define TCP_ACK 0x10

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 17);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} dns_events SEC(".maps");

static __always_inline void handshake(struct flow_key *key, struct flow_stats *st, __u16 flags,
				      __u64 now)
{
	if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		st->syn_ns = now;
	} else if ((flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
		struct flow_key rev = *key;
		__builtin_memcpy(rev.src_ip, key->dst_ip, 16);
		__builtin_memcpy(rev.dst_ip, key->src_ip, 16);
		rev.src_port = key->dst_port;
		rev.dst_port = key->src_port;
		rev.direction = key->direction ^ 1;
		struct flow_stats *syn = bpf_map_lookup_elem(&flows, &rev);
		if (syn && syn->syn_ns && now > syn->syn_ns)
			syn->handshake_us = (now - syn->syn_ns) / 1000;
	}
}

static __always_inline void dns(struct __sk_buff *skb, struct flow_key *key,
				struct flk_parsed *p, __u64 now)
{
	if (!p->payload_off || skb->len <= p->payload_off)
		return;
	__u32 n = skb->len - p->payload_off;
	if (n > FLK_DNS_MAX)
		n = FLK_DNS_MAX;
	struct dns_event *ev = bpf_ringbuf_reserve(&dns_events, sizeof(*ev), 0);
	if (!ev) {
		flk_count_loss(FLK_LOSS_DNS_RINGBUF_FULL);
		return;
	}
	ev->key = *key;
	ev->ts_ns = now;
	ev->pkt_len = skb->len - FLK_ETH_HLEN;
	ev->pad = 0;
	if (n == 0 || bpf_skb_load_bytes(skb, p->payload_off, ev->data, n & (FLK_DNS_MAX * 2 - 1)))
		n = 0;
	ev->dns_len = n;
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline int observe(struct __sk_buff *skb, __u32 direction)
{
	struct flow_key key = {};
	struct flk_parsed p = {};

	if (flk_parse(skb, FLK_ETH_HLEN, skb->protocol, &key, &p))
		return TC_ACT_UNSPEC;
	key.ifindex = skb->ifindex;
	key.direction = direction;

	__u64 now = bpf_ktime_get_boot_ns();
	__u64 bytes = skb->len - FLK_ETH_HLEN;
	struct flow_stats *st = bpf_map_lookup_elem(&flows, &key);
	if (st) {
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, bytes);
		st->last_ns = now;
		if (p.tcp_flags && (st->tcp_flags | p.tcp_flags) != st->tcp_flags)
			__sync_fetch_and_or(&st->tcp_flags, p.tcp_flags);
	} else {
		struct flow_stats init = {
			.packets = 1,
			.bytes = bytes,
			.first_ns = now,
			.last_ns = now,
			.tcp_flags = p.tcp_flags,
		};
		long err = bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST);
		if (err == -17 /* EEXIST: another CPU created it */) {
			st = bpf_map_lookup_elem(&flows, &key);
			if (st) {
				__sync_fetch_and_add(&st->packets, 1);
				__sync_fetch_and_add(&st->bytes, bytes);
				__sync_fetch_and_or(&st->tcp_flags, p.tcp_flags);
			}
		} else if (err) {
			flk_count_loss(FLK_LOSS_FLOW_MAP_FULL);
			return TC_ACT_UNSPEC;
		}
		st = bpf_map_lookup_elem(&flows, &key);
	}
	if (st && key.proto == FLK_IPPROTO_TCP)
		handshake(&key, st, p.tcp_flags, now);

	if ((key.proto == FLK_IPPROTO_UDP || key.proto == FLK_IPPROTO_TCP) &&
	    (key.src_port == 53 || key.dst_port == 53))
		dns(skb, &key, &p, now);
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int flow_ingress(struct __sk_buff *skb)
{
	return observe(skb, FLK_DIR_INGRESS);
}

SEC("classifier")
int flow_egress(struct __sk_buff *skb)
{
	return observe(skb, FLK_DIR_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

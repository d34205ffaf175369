// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TCP health per socket 4-tuple (src = local end): retransmitted segments
 * (tcp:tcp_retransmit_skb) and the smoothed RTT (tcp:tcp_probe, on every
 * segment received by an established socket). Resets are counted from the
 * packets themselves by the flow programs (every kernel, with or without a
 * socket).
 */
#include "kernel.h"

#define FLK_LOAD(ctx, off, dst, len) bpf_probe_read_kernel((dst), (len), (void *)((ctx) + (off)))
#include "parse.h"

#define FLK_AF_INET 2
#define FLK_AF_INET6 10
/* struct tcp_skb_cb: seq, end_seq, then tcp_gso_segs (since 4.x, unchanged). */
#define FLK_TCP_CB_GSO_SEGS 8

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct tcp_key);
	__type(value, struct tcp_stats);
} tcp_health SEC(".maps");

static __always_inline struct tcp_stats *health(struct tcp_key *key)
{
	struct tcp_stats *st = bpf_map_lookup_elem(&tcp_health, key);
	if (st)
		return st;
	struct tcp_stats init = {};
	if (bpf_map_update_elem(&tcp_health, key, &init, BPF_NOEXIST)) {
		st = bpf_map_lookup_elem(&tcp_health, key);
		if (!st)
			flk_count_loss(FLK_LOSS_TCP_MAP_FULL);
		return st;
	}
	return bpf_map_lookup_elem(&tcp_health, key);
}

/* Fills the key from a record's IPv6 (or v4-mapped) ends and ports. */
static __always_inline int key_from_v6(struct tcp_key *key, __u16 sport, __u16 dport,
				       const void *s6, const void *d6)
{
	if (bpf_probe_read_kernel(key->src_ip, 16, s6) ||
	    bpf_probe_read_kernel(key->dst_ip, 16, d6))
		return -1;
	const __u32 *w = (const __u32 *)key->src_ip;
	key->ip_version = (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff)) ? 4 : 6;
	key->src_port = sport;
	key->dst_port = dport;
	return 0;
}

/* Adds a retransmitted skb's segments (tcp_skb_pcount: the count the
 * kernel adds to TcpRetransSegs and to the socket's total_retrans). */
static __always_inline void count_retransmit(struct tcp_key *key, struct sk_buff *skb)
{
	struct tcp_stats *st = health(key);
	if (!st)
		return;
	__u16 segs = 0;
	if (skb)
		bpf_probe_read_kernel(&segs, sizeof(segs), &skb->cb[FLK_TCP_CB_GSO_SEGS]);
	__sync_fetch_and_add(&st->retransmits, segs ? segs : 1);
	st->last_jiffies = bpf_jiffies64();
}

/* Reads one record's ends into the key, from the local end (`peer`: from
 * the remote one). A macro: the record types differ, the fields do not. */
#define FLK_KEY_FROM(key, rec, peer)                                                       \
	((peer) ? key_from_v6((key), BPF_CORE_READ((rec), dport), BPF_CORE_READ((rec), sport), \
			      (rec)->daddr_v6, (rec)->saddr_v6)                                \
		: key_from_v6((key), BPF_CORE_READ((rec), sport), BPF_CORE_READ((rec), dport), \
			      (rec)->saddr_v6, (rec)->daddr_v6))

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcp_retransmit(void *ctx)
{
	struct tcp_key key = {};
	struct sk_buff *skb;
	int err;
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *r = ctx;
		/* A failed attempt sent nothing: the kernel counts no segment. */
		if (bpf_core_field_exists(r->err) && BPF_CORE_READ(r, err))
			return 0;
		err = FLK_KEY_FROM(&key, r, 0);
		skb = (struct sk_buff *)BPF_CORE_READ(r, skbaddr);
	} else {
		struct trace_event_raw_tcp_event_sk_skb *r = ctx;
		err = FLK_KEY_FROM(&key, r, 0);
		skb = (struct sk_buff *)BPF_CORE_READ(r, skbaddr);
	}
	if (!err)
		count_retransmit(&key, skb);
	return 0;
}

/* The socket each CPU last recorded the smoothed RTT of, per slot, and the
 * jiffy it did: tcp_probe records a socket's RTT at most once per jiffy per
 * CPU, so most segments of a busy socket skip the hash. */
#define FLK_PROBE_SLOTS_LOG2 6

struct probe_seen {
	struct tcp_key key;
	__u64 jiffies;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << FLK_PROBE_SLOTS_LOG2);
	__type(key, __u32);
	__type(value, struct probe_seen);
} probe_seen SEC(".maps");

/* Whether this CPU recorded the socket's RTT in this jiffy already; marks
 * it recorded otherwise. */
static __always_inline int seen_this_jiffy(const struct tcp_key *key, __u64 now)
{
	const __u64 *k = (const __u64 *)key;
	__u32 slot = ((__u32)(k[1] >> 32) ^ (__u32)(k[3] >> 32) ^ (__u32)k[4]) * 0x9E3779B1u;
	slot >>= 32 - FLK_PROBE_SLOTS_LOG2;
	struct probe_seen *p = bpf_map_lookup_elem(&probe_seen, &slot);
	if (!p)
		return 0;
	const __u64 *q = (const __u64 *)&p->key;
	if (p->jiffies == now &&
	    ((k[0] ^ q[0]) | (k[1] ^ q[1]) | (k[2] ^ q[2]) | (k[3] ^ q[3]) | (k[4] ^ q[4])) == 0)
		return 1;
	p->key = *key;
	p->jiffies = now;
	return 0;
}

/* One end from a sockaddr copied as words (little-endian family, then the
 * port in network order); returns the IP version, -1 for another family. */
static __always_inline int end_from_words(const __u32 *w, __u8 *ip, __u16 *port)
{
	__u16 family = w[0] & 0xffff;
	*port = bpf_ntohs(w[0] >> 16);
	if (family == FLK_AF_INET) {
		*(__u64 *)ip = 0;
		*(__u32 *)(ip + 8) = bpf_htonl(0xffff);
		*(__u32 *)(ip + 12) = w[1];
		return 4;
	}
	if (family == FLK_AF_INET6) {
		__builtin_memcpy(ip, &w[2], 16);
		return 6;
	}
	return -1;
}

/* tcp_probe runs on every segment an established socket receives: its
 * record is read with plain context loads, no helper call. */
SEC("tracepoint/tcp/tcp_probe")
int tcp_probe(struct trace_event_raw_tcp_probe *ctx)
{
	struct tcp_key key = {};
	__u32 srtt = ctx->srtt;
	if (!srtt)
		return 0;
	const struct flk_tcp_probe_head *h = (const void *)ctx;
	__u32 s[7], d[7];
#pragma unroll
	for (int i = 0; i < 7; i++) {
		/* volatile: each word one load at a constant context offset */
		s[i] = *(volatile const __u32 *)&h->saddr[i];
		d[i] = *(volatile const __u32 *)&h->daddr[i];
	}
	int v = end_from_words(s, key.src_ip, &key.src_port);
	if (v < 0 || end_from_words(d, key.dst_ip, &key.dst_port) != v)
		return 0;
	key.ip_version = v;
	__u64 now = bpf_jiffies64();
	if (seen_this_jiffy(&key, now))
		return 0;
	struct tcp_stats *st = health(&key);
	if (st) {
		st->srtt_us = srtt;
		st->last_jiffies = now;
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

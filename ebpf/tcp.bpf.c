// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TCP health per socket 4-tuple (src = local end): retransmits
 * (tcp:tcp_retransmit_skb), resets sent (tcp:tcp_send_reset) and received
 * (tcp:tcp_receive_reset, counted on the peer's direction), smoothed RTT
 * (tcp:tcp_probe, on every segment received by an established socket).
 */
#include "kernel.h"

#define FLK_LOAD(ctx, off, dst, len) bpf_probe_read_kernel((dst), (len), (void *)((ctx) + (off)))
#include "parse.h"

#define FLK_AF_INET 2
#define FLK_AF_INET6 10

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

/* Fills one end from a struct sockaddr_in / sockaddr_in6 copy (28 bytes). */
static __always_inline int end_from_sockaddr(const __u8 *sa, __u8 *ip, __u16 *port, __u8 *ver)
{
	__u16 family = sa[0] | (sa[1] << 8);
	*port = (sa[2] << 8) | sa[3];
	if (family == FLK_AF_INET) {
		flk_map_v4(ip, sa + 4);
		*ver = 4;
	} else if (family == FLK_AF_INET6) {
		__builtin_memcpy(ip, sa + 8, 16);
		*ver = 6;
	} else {
		return -1;
	}
	return 0;
}

/* The key of a socket event that carries both ends as sockaddrs (v4 or v6). */
static __always_inline int key_from_sockaddrs(struct tcp_key *key, const void *saddr, const void *daddr)
{
	__u8 s[28], d[28];
	__u8 v1, v2;
	bpf_probe_read_kernel(s, sizeof(s), saddr);
	bpf_probe_read_kernel(d, sizeof(d), daddr);
	if (end_from_sockaddr(s, key->src_ip, &key->src_port, &v1) ||
	    end_from_sockaddr(d, key->dst_ip, &key->dst_port, &v2))
		return -1;
	key->ip_version = v1;
	return 0;
}

/* Adds one to a counter of the flow's health entry. */
static __always_inline void count(struct tcp_key *key, int resets)
{
	struct tcp_stats *st = health(key);
	if (!st)
		return;
	if (resets)
		__sync_fetch_and_add(&st->resets, 1);
	else
		__sync_fetch_and_add(&st->retransmits, 1);
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
	int err;
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb))
		err = FLK_KEY_FROM(&key, (struct trace_event_raw_tcp_retransmit_skb *)ctx, 0);
	else
		err = FLK_KEY_FROM(&key, (struct trace_event_raw_tcp_event_sk_skb *)ctx, 0);
	if (!err)
		count(&key, 0);
	return 0;
}

SEC("tracepoint/tcp/tcp_send_reset")
int tcp_send_reset(void *ctx)
{
	struct tcp_key key = {};
	int err;
	if (bpf_core_type_exists(struct trace_event_raw_tcp_send_reset)) {
		struct trace_event_raw_tcp_send_reset *r = ctx;
		err = key_from_sockaddrs(&key, r->saddr, r->daddr);
	} else {
		err = FLK_KEY_FROM(&key, (struct trace_event_raw_tcp_event_sk_skb *)ctx, 0);
	}
	if (!err)
		count(&key, 1);
	return 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int tcp_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	struct tcp_key key = {};
	/* The peer sent it: key from the peer's side. */
	if (!FLK_KEY_FROM(&key, ctx, 1))
		count(&key, 1);
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

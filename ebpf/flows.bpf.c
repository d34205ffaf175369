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
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* One entry per key shared by the CPUs: the per-CPU flow cache below takes
 * nearly every packet, so the hash sees only slot flushes and SYNs (atomic
 * adds). Allocated on demand: memory follows the active flows, not
 * max_entries, and does not grow with the CPU count. (A per-CPU hash
 * allocated on demand cost 4.5-12 us per packet with 100k flows, against
 * 1 us for this map: allocating per-CPU values is slow.) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 17);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} flows SEC(".maps");

/* Time of the last SYN (without ACK) per flow key, shared across CPUs so the
 * SYN-ACK finds it whichever CPU saw the SYN. Consumed by the SYN-ACK; LRU so
 * unanswered SYNs cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct flow_key);
	__type(value, __u64);
} syns SEC(".maps");

/* Per-CPU cache in front of the hash: two banks of FLK_CACHE_SLOTS slots,
 * each slot one key and the packets counted for it since it was installed.
 * A packet of another key in the slot flushes it to the hash. Userspace
 * switches `cache_bank` at each eviction, waits for running programs, and
 * reads (and empties) the bank no longer written (flowlake.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * FLK_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct flow_cache_slot);
} flow_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cache_bank SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flk_clock_sample);
} clock SEC(".maps");

/* Interfaces without a link-layer header (tun, wireguard, netkit in L3
 * mode: ARPHRD_NONE and the like), where the IP header starts the packet.
 * Userspace fills it as it attaches and counts them in l3_count, so nodes
 * without such interfaces skip the lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 12);
	__type(key, __u32);
	__type(value, __u32);
} l3_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} l3_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} dns_events SEC(".maps");

/* SYN -> SYN-ACK latency, written on the SYN direction's entry. Only runs for
 * SYN packets. */
static __always_inline void handshake(struct flow_key *key, __u16 flags, __u64 now)
{
	if (!(flags & TCP_ACK)) {
		bpf_map_update_elem(&syns, key, &now, BPF_ANY);
		return;
	}
	struct flow_key rev = *key;
	__builtin_memcpy(rev.src_ip, key->dst_ip, 16);
	__builtin_memcpy(rev.dst_ip, key->src_ip, 16);
	rev.src_port = key->dst_port;
	rev.dst_port = key->src_port;
	rev.direction = key->direction ^ 1;
	__u64 *syn = bpf_map_lookup_elem(&syns, &rev);
	if (!syn)
		return;
	__u64 syn_ns = *syn;
	bpf_map_delete_elem(&syns, &rev);
	struct flow_stats *st = bpf_map_lookup_elem(&flows, &rev);
	if (st && now > syn_ns)
		st->handshake_us = (now - syn_ns) / 1000;
}

/* Reserves a DNS event with room for `room` bytes of data and copies n
 * (1..room) bytes of payload into it. A macro: the size must be a constant. */
#define FLK_DNS_COPY(skb, off, n, room, ev)                                                     \
	do {                                                                                    \
		ev = bpf_ringbuf_reserve(&dns_events, sizeof(*ev) - FLK_DNS_MAX + (room), 0);    \
		/* The length as 1..room by construction: verifiers before 6.8 do not  \
		 * learn from `n != 0` that a length cannot be zero. */                        \
		if (ev && bpf_skb_load_bytes(skb, off, ev->data, (((n) - 1) & ((room) - 1)) + 1)) \
			n = 0;                                                                  \
	} while (0)

static __always_inline void dns(struct __sk_buff *skb, struct flow_key *key,
				struct flk_parsed *p, __u32 l2, __u64 now)
{
	if (!p->payload_off || !p->l4_off)
		return;
	__u32 len = skb->len > p->payload_off ? skb->len - p->payload_off : 0;
	__u32 payload = len, seq = 0;
	if (key->proto == FLK_IPPROTO_TCP) {
		if (!len)
			return; /* handshake, ACKs: no DNS bytes */
		if (bpf_skb_load_bytes(skb, p->l4_off + 4, &seq, 4))
			return;
		seq = bpf_ntohl(seq);
	} else {
		/* UDP: the datagram's own length, so a first fragment or a cut
		 * copy shows as truncated. */
		__u16 ulen;
		if (bpf_skb_load_bytes(skb, p->l4_off + 4, &ulen, 2))
			return;
		ulen = bpf_ntohs(ulen);
		payload = ulen > 8 ? ulen - 8 : 0;
		if (len > payload)
			len = payload;
	}
	if (!len)
		return;
	__u32 n = len > FLK_DNS_MAX ? FLK_DNS_MAX : len;
	struct dns_event *ev;
	if (n <= FLK_DNS_SMALL)
		FLK_DNS_COPY(skb, p->payload_off, n, FLK_DNS_SMALL, ev);
	else
		FLK_DNS_COPY(skb, p->payload_off, n, FLK_DNS_MAX, ev);
	if (!ev) {
		flk_count_loss(FLK_LOSS_DNS_RINGBUF_FULL);
		return;
	}
	ev->key = *key;
	ev->ts_ns = now;
	ev->pkt_len = skb->len - l2;
	ev->dns_len = n;
	ev->pad = 0;
	ev->payload_len = payload;
	ev->tcp_seq = seq;
	bpf_ringbuf_submit(ev, 0);
}

/* The common case read straight from the linear area (direct packet access):
 * IPv4 without options and not a fragment, or IPv6 without extension headers,
 * carrying TCP or UDP whose header is in the linear area. Returns 0 when it
 * filled key and p; anything else (options, extension headers, fragments,
 * ICMP, SCTP, headers in paged data) goes through flk_parse. */
static __always_inline int fast_parse(struct __sk_buff *skb, __u32 l2, struct flow_key *key,
				      struct flk_parsed *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	void *l4;
	__u8 proto;

	if (skb->protocol == bpf_htons(FLK_ETH_P_IP)) {
		struct flk_ipv4 *ip = data + l2;
		if ((void *)(ip + 1) > end)
			return -1;
		if (ip->ver_ihl != 0x45 || (ip->frag_off & bpf_htons(0x1fff)))
			return -1;
		proto = ip->protocol;
		*(__u64 *)&key->src_ip[0] = 0;
		*(__u32 *)&key->src_ip[8] = bpf_htonl(0xffff);
		*(__u32 *)&key->src_ip[12] = *(__u32 *)ip->saddr;
		*(__u64 *)&key->dst_ip[0] = 0;
		*(__u32 *)&key->dst_ip[8] = bpf_htonl(0xffff);
		*(__u32 *)&key->dst_ip[12] = *(__u32 *)ip->daddr;
		key->ip_version = 4;
		p->l3_len = bpf_ntohs(ip->tot_len);
		l4 = ip + 1;
	} else if (skb->protocol == bpf_htons(FLK_ETH_P_IPV6)) {
		struct flk_ipv6 *ip6 = data + l2;
		if ((void *)(ip6 + 1) > end)
			return -1;
		if ((ip6->ver_tc_flow & 0xf0) != 0x60)
			return -1;
		proto = ip6->nexthdr;
		__builtin_memcpy(key->src_ip, ip6->saddr, 16);
		__builtin_memcpy(key->dst_ip, ip6->daddr, 16);
		key->ip_version = 6;
		p->l3_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		l4 = ip6 + 1;
	} else {
		return -1;
	}
	if (proto == FLK_IPPROTO_TCP) {
		__u8 *th = l4;
		if ((void *)(th + 14) > end)
			return -1;
		p->tcp_flags = th[13] | ((th[12] & 1) << 8);
		p->payload_off = (__u32)((void *)th - data) + (th[12] >> 4) * 4;
	} else if (proto == FLK_IPPROTO_UDP) {
		if (l4 + 8 > end)
			return -1;
		p->payload_off = (__u32)(l4 - data) + 8;
	} else {
		return -1;
	}
	__u16 *ports = l4;
	key->src_port = bpf_ntohs(ports[0]);
	key->dst_port = bpf_ntohs(ports[1]);
	key->proto = proto;
	p->l4_off = (__u32)(l4 - data);
	return 0;
}

/* Adds packets of one key to its entry in the hash; when the map is full
 * they are counted as lost. */
static __always_inline void flow_add(struct flow_key *key, struct flow_stats *add)
{
	struct flow_stats *st = bpf_map_lookup_elem(&flows, key);
	if (!st) {
		/* NOEXIST keeps a key another CPU created meanwhile. */
		long err = bpf_map_update_elem(&flows, key, add, BPF_NOEXIST);
		if (!err)
			return;
		if (err != -17 /* EEXIST: another CPU created it */) {
			flk_count_losses(FLK_LOSS_FLOW_MAP_FULL, add->packets);
			flk_count_losses(FLK_LOSS_FLOW_MAP_FULL_BYTES, add->bytes);
			return;
		}
		st = bpf_map_lookup_elem(&flows, key);
		if (!st)
			return;
	}
	/* Shared by the CPUs: atomic counts; the times are plain stores (two
	 * CPUs flushing the same key at once may keep either's time). */
	__sync_fetch_and_add(&st->packets, add->packets);
	__sync_fetch_and_add(&st->bytes, add->bytes);
	__sync_fetch_and_add(&st->wire_packets, add->wire_packets);
	if (add->resets)
		__sync_fetch_and_add(&st->resets, add->resets);
	if ((st->tcp_flags | add->tcp_flags) != st->tcp_flags) {
#ifdef FLK_NO_ATOMIC_OR
		/* Atomic OR came with 5.12, and older kernels refuse the
		 * instruction anywhere in a program: their object (build.rs:
		 * flows_compat) ORs in place, where two CPUs flushing the
		 * same key at once may lose a flag bit, never a packet. */
		st->tcp_flags |= add->tcp_flags;
#else
		__sync_fetch_and_or(&st->tcp_flags, add->tcp_flags);
#endif
	}
	if (add->first_jiffies < st->first_jiffies)
		st->first_jiffies = add->first_jiffies;
	if (add->last_jiffies > st->last_jiffies)
		st->last_jiffies = add->last_jiffies;
}

static __always_inline int key_eq(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) |
		(x[4] ^ y[4]) | (x[5] ^ y[5])) == 0;
}

/* Slot of a key in a cache bank: a multiplicative hash of the words that
 * differ between the flows of one interface. */
static __always_inline __u32 cache_slot(const struct flow_key *k)
{
	const __u32 *w = (const __u32 *)k;
	__u32 h = w[3] ^ w[7] ^ w[8] ^ (k->ifindex << 1) ^ k->direction;
	return (h * 0x9E3779B1u) >> (32 - FLK_CACHE_SLOTS_LOG2);
}

/* Bytes before the IP header: 0 on the interfaces in l3_ifaces, an
 * Ethernet header elsewhere. */
static __always_inline __u32 link_header_len(struct __sk_buff *skb)
{
	__u32 zero = 0, ifindex = skb->ifindex;
	__u32 *n = bpf_map_lookup_elem(&l3_count, &zero);
	if (n && *n && bpf_map_lookup_elem(&l3_ifaces, &ifindex))
		return 0;
	return FLK_ETH_HLEN;
}

static __always_inline int observe(struct __sk_buff *skb, __u32 direction)
{
	struct flow_key key = {};
	struct flk_parsed p = {};
	__u32 l2 = link_header_len(skb);

	if (fast_parse(skb, l2, &key, &p)) {
		__builtin_memset(&key, 0, sizeof(key));
		__builtin_memset(&p, 0, sizeof(p));
		if (flk_parse(skb, l2, skb->protocol, &key, &p))
			return TC_ACT_UNSPEC;
	}
	key.ifindex = skb->ifindex;
	key.direction = direction;

	/* Flow times in jiffies: the verifier inlines bpf_jiffies64 into one
	 * load, where a clock helper call costs 25-50 ns per packet here.
	 * Userspace converts them with the calibrated clock (clock_sample). */
	__u64 now = bpf_jiffies64();
	__u64 bytes = skb->len - l2;
	/* Wire packets: a GSO skb (sent, before segmentation) or a GRO skb
	 * (received, merged) carries gso_segs segments; others carry one. */
	__u64 segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;

	if (p.tcp_flags & (TCP_SYN | TCP_RST)) {
		/* Handshake packets and resets go straight to the hash: the
		 * SYN-ACK finds the SYN direction's entry there, and resets are
		 * counted (rare: no per-packet cost in the cache). Boot clock
		 * for the latency. */
		struct flow_stats one = {
			.packets = 1,
			.bytes = bytes,
			.wire_packets = segs,
			.first_jiffies = now,
			.last_jiffies = now,
			.tcp_flags = p.tcp_flags,
			.resets = (p.tcp_flags & TCP_RST) ? 1 : 0,
		};
		flow_add(&key, &one);
		if (p.tcp_flags & TCP_SYN)
			handshake(&key, p.tcp_flags, bpf_ktime_get_boot_ns());
	} else {
		__u32 zero = 0;
		__u32 *bank = bpf_map_lookup_elem(&cache_bank, &zero);
		if (!bank)
			return TC_ACT_UNSPEC;
		__u32 idx = ((*bank & 1) << FLK_CACHE_SLOTS_LOG2) | cache_slot(&key);
		struct flow_cache_slot *c = bpf_map_lookup_elem(&flow_cache, &idx);
		if (!c)
			return TC_ACT_UNSPEC;
		if (c->stats.packets && key_eq(&c->key, &key)) {
			c->stats.packets += 1;
			c->stats.bytes += bytes;
			c->stats.wire_packets += segs;
			c->stats.last_jiffies = now;
			c->stats.tcp_flags |= p.tcp_flags;
		} else {
			if (c->stats.packets)
				flow_add(&c->key, &c->stats);
			c->key = key;
			c->stats.packets = 1;
			c->stats.bytes = bytes;
			c->stats.wire_packets = segs;
			c->stats.first_jiffies = now;
			c->stats.last_jiffies = now;
			c->stats.handshake_us = 0;
			c->stats.tcp_flags = p.tcp_flags;
		}
	}

	if ((key.proto == FLK_IPPROTO_UDP || key.proto == FLK_IPPROTO_TCP) &&
	    (key.src_port == 53 || key.dst_port == 53))
		dns(skb, &key, &p, l2, bpf_ktime_get_boot_ns());
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

/* Clock calibration, run by userspace with BPF_PROG_TEST_RUN (never
 * attached): one instant read as jiffies and as boot time. */
SEC("classifier")
int clock_sample(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct flk_clock_sample *c = bpf_map_lookup_elem(&clock, &zero);
	if (c) {
		c->jiffies = bpf_jiffies64();
		c->boot_ns = bpf_ktime_get_boot_ns();
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Packet drops: tracepoint skb:kfree_skb with the kernel's drop reason. Frees
 * with SKB_CONSUMED or NOT_SPECIFIED are ordinary frees, not drops; the
 * smallest counted value comes from the running kernel's BTF (min_reason).
 * The dropped packet's 5-tuple is parsed from its network header; its
 * network namespace is its device's, else its socket's.
 *
 * Kernels before 5.17 have no reason in the record: there every kfree_skb
 * counts, with the reason FLK_DROP_REASON_UNKNOWN (bpf_core_field_exists
 * decides at load time, from the running kernel's BTF).
 */
#include "kernel.h"

#define FLK_LOAD(ctx, off, dst, len) bpf_probe_read_kernel((dst), (len), (void *)((ctx) + (off)))
#include "parse.h"

/* Set by userspace from enum skb_drop_reason: NOT_SPECIFIED + 1. */
volatile const __u32 min_reason = 3;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct drop_key);
	__type(value, struct drop_stats);
} drops SEC(".maps");

SEC("tracepoint/skb/kfree_skb")
int kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	__u32 reason = FLK_DROP_REASON_UNKNOWN;
	if (bpf_core_field_exists(ctx->reason)) {
		reason = BPF_CORE_READ(ctx, reason);
		if (reason < min_reason)
			return 0;
	}
	struct sk_buff *skb = BPF_CORE_READ(ctx, skbaddr);
	if (!skb)
		return 0;

	__u16 nh = BPF_CORE_READ(skb, network_header);
	if (nh == (__u16)~0U)
		return 0;
	unsigned char *head = BPF_CORE_READ(skb, head);
	struct drop_key key = {};
	struct flk_parsed p = {};
	if (flk_parse(head, nh, BPF_CORE_READ(skb, protocol), &key.flow, &p))
		return 0;
	key.flow.ifindex = BPF_CORE_READ(skb, dev, ifindex);
	key.netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	/* No device (a socket's queues, a locally generated packet before it
	 * has one): the namespace of its socket. */
	if (!key.netns)
		key.netns = BPF_CORE_READ(skb, sk, __sk_common.skc_net.net, ns.inum);
	key.iif = BPF_CORE_READ(skb, skb_iif);
	key.reason = reason;

	__u64 now = bpf_ktime_get_boot_ns();
	struct drop_stats *st = bpf_map_lookup_elem(&drops, &key);
	if (!st) {
		struct drop_stats init = {};
		if (bpf_map_update_elem(&drops, &key, &init, BPF_NOEXIST) && bpf_map_lookup_elem(&drops, &key) == 0) {
			flk_count_loss(FLK_LOSS_DROP_MAP_FULL);
			return 0;
		}
		st = bpf_map_lookup_elem(&drops, &key);
		if (!st)
			return 0;
	}
	__sync_fetch_and_add(&st->packets, 1);
	__sync_fetch_and_add(&st->bytes, p.l3_len);
	st->last_ns = now;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

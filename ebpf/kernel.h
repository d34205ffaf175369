/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types the tracing programs read, marked for CO-RE
 * relocation: libbpf/aya adjust field offsets to the running kernel's BTF,
 * so no generated vmlinux.h is needed.
 */
#ifndef FLOWLAKE_KERNEL_H
#define FLOWLAKE_KERNEL_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
};

struct sock_common {
	possible_net_t skc_net;
};

struct sock {
	struct sock_common __sk_common;
};

struct sk_buff {
	unsigned int len;
	struct net_device *dev;
	struct sock *sk;
	int skb_iif;
	__u16 protocol;
	__u16 transport_header;
	__u16 network_header;
	__u16 mac_header;
	unsigned char *head;
	unsigned char *data;
	char cb[48];
};

struct trace_entry {
	unsigned short type;
};

/* Only the type matters for CO-RE (field kinds must match the kernel's). */
enum skb_drop_reason {
	FLK_SKB_DROP_REASON_PLACEHOLDER = 0,
};

struct trace_event_raw_kfree_skb {
	struct trace_entry ent;
	void *skbaddr;
	void *location;
	enum skb_drop_reason reason;
};

/* The TCP records read here differ across kernels in name and layout; each
 * program picks its record with bpf_core_type_exists. Only the fields read
 * are declared: CO-RE finds them by name. Every one of them stores both
 * ends as IPv6, IPv4 as ::ffff:a.b.c.d, ports in host order. */

/* tcp_retransmit_skb's own record (newer kernels). Where it has `err` (6.18
 * here), the tracepoint also fires for a retransmission that failed (`err`
 * non-zero: nothing was sent and TcpRetransSegs did not count it). */
struct trace_event_raw_tcp_retransmit_skb {
	struct trace_entry ent;
	const void *skbaddr;
	__u16 sport;
	__u16 dport;
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
	int err;
};

/* The class tcp_retransmit_skb belongs to before its own record. */
struct trace_event_raw_tcp_event_sk_skb {
	struct trace_entry ent;
	const void *skbaddr;
	__u16 sport;
	__u16 dport;
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

struct trace_event_raw_tcp_probe {
	struct trace_entry ent;
	__u8 saddr[28];
	__u8 daddr[28];
	__u16 family;
	__u32 srtt;
};

#pragma clang attribute pop

/* The start of the tcp_probe record, unchanged since the tracepoint got its
 * sockaddrs (4.16): read with plain context loads. (CO-RE relocated offsets
 * come in a register, and the verifier refuses loads through a modified
 * context pointer.) */
struct flk_tcp_probe_head {
	__u64 ent;
	__u32 saddr[7]; /* struct sockaddr_in or sockaddr_in6 */
	__u32 daddr[7];
};

#endif

#!/usr/bin/env python3
"""Writes docs/compatibility.md (to stdout) from a kernel-matrix.sh run.

Usage: kernel_matrix_report.py RESULTS_DIR TOTAL_SECONDS

RESULTS_DIR holds one directory per kernel (5.10, 6.1, 6.12, host), each with
`kernel` (uname -r), `tests.txt` (libtest output), `rc`, `seconds` and
`preflight.json` (the preflight test's findings).
"""

import json
import os
import re
import sys

# Capability -> the test that proves it (name suffix) and what it checks.
CAPABILITIES = [
    ("flows", "flows_equal_tcpdump_capture_exactly", "packets and bytes per flow equal a tcpdump capture"),
    ("dns", "dns_queries_and_responses_with_latency", "queries, responses, latency"),
    ("large dns", "large_dns_over_udp_tcp_ipv6_and_from_the_node", "EDNS answers of 40 and 240 records over UDP, IPv6, TCP in three segments, a node's query; an answer over 4096 bytes a counted loss"),
    ("handshake", "flows_equal_tcpdump_capture_exactly", "SYN to SYN-ACK latency"),
    ("rtt", "lost_segments_show_retransmits_and_rtt", "smoothed RTT from tcp_probe"),
    ("retransmits", "retransmits_equal_the_kernel_count_on_the_sending_row", "retransmitted segments per flow equal TcpRetransSegs of the sender's namespace under a deterministic loss, on the sending row only (same node, across two node namespaces, a node socket)"),
    ("resets", "resets_counted_once_on_the_sending_pod_row", "resets per flow equal tcpdump's RST segments, once, on the sender's row (same node and across two node namespaces)"),
    ("drops", "drops_have_kernel_reason_names", "netfilter and no-socket drops, counted exactly"),
    ("node drops", "node_socket_drops_are_node_level", "drops of the node's own sockets counted exactly at node-level observation points"),
    ("wire packets", "wire_packets_count_gso_segments", "a bulk TCP transfer over veths with TSO: wire_packets equals OutSegs + RetransSegs of each sending namespace (GSO segments counted), packets (kernel buffers) fewer"),
    ("map full", "full_flow_map_losses_are_exactly_what_is_missing", "a 4-entry flow map flooded: counted plus lost packets and bytes equal the capture"),
    ("l3", "tun_traffic_counted_exactly", "a TUN device (no link-layer header) equals tcpdump"),
    ("capture", "capture_of_a_pod_veth_equals_tcpdump_per_direction", "a packet capture of a pod's veth (AF_PACKET, classic BPF filter, TPACKET_V3 ring, pcapng) equals tcpdump on the same veth, packets and bytes per direction"),
    ("capture on a bridge", "pods_on_a_bridge_resolve_to_their_ports_before_any_traffic", "a pod behind a bridge CNI resolved to its bridge port (rtnetlink: each port's peer namespace and its addresses, IFA_TARGET_NETNSID), IPv4 and IPv6, before any traffic"),
    ("capture drops", "packets_the_kernel_could_not_deliver_are_counted_in_the_summary_and_the_file", "an overflowing capture ring: packets written plus the kernel's drops equal the datagrams sent"),
]
ORDER = ["5.10", "6.1", "6.12", "6.18", "host"]


def load(results, label):
    d = os.path.join(results, label)
    read = lambda f, default="": open(os.path.join(d, f)).read().strip() if os.path.exists(os.path.join(d, f)) else default
    tests = {}
    for m in re.finditer(r"^test (\S+) \.\.\. (\w+)", read("tests.txt"), re.M):
        tests[m.group(1).rsplit("::", 1)[-1]] = m.group(2)
    pre = read("preflight.json")
    return {
        "kernel": read("kernel", "?"),
        "seconds": read("seconds", "?"),
        "tests": tests,
        "preflight": json.loads(pre) if pre else None,
    }


def cell(run, cap, test):
    result = run["tests"].get(test)
    degraded = None
    if run["preflight"]:
        for c in run["preflight"]["capabilities"]:
            if c["name"] == cap and c.get("degraded"):
                degraded = c["degraded"]
    if result == "ok":
        return "yes, degraded¹" if degraded else "yes"
    if result is None:
        return "not run"
    return "**FAILED**"


def cost(results, label):
    """The cost table cells of a run, or None: (ns, counter ns, ratio) for TCP then UDP."""
    path = os.path.join(results, label, "cost.txt")
    if not os.path.exists(path):
        return None
    cells = []
    for block in open(path).read().split("### ")[1:]:
        rows = {}
        for m in re.finditer(r"^\|\s*([^|]+?)\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", block, re.M):
            rows[m.group(1)] = (m.group(3), m.group(4))
        if "flows (in+eg)" not in rows or "count_packets" not in rows:
            return None
        cells += [rows["flows (in+eg)"][0], rows["count_packets"][0], rows["flows (in+eg)"][1]]
    return cells if len(cells) == 6 else None


def main():
    results, total = sys.argv[1], sys.argv[2]
    runs = [(label, load(results, label)) for label in ORDER if os.path.isdir(os.path.join(results, label))]
    out = []
    out.append("# Kernel compatibility")
    out.append("")
    out.append("Written by `scripts/kernel-matrix.sh` (not by hand): the collector's datapath tests")
    out.append("run on Debian's kernels booted in QEMU (virtme-ng, TCG) and on the host kernel, from one")
    out.append("collector binary. A cell is `yes` when the test that proves the capability passed on")
    out.append("that kernel.")
    out.append("")
    header = "| kernel | " + " | ".join(c[0] for c in CAPABILITIES) + " | programs | tc | preflight |"
    out.append(header)
    out.append("|" + "---|" * (len(CAPABILITIES) + 4))
    notes = {}
    for label, run in runs:
        pre = run["preflight"]
        row = [f"{label} (`{run['kernel']}`)"]
        row += [cell(run, cap, test) for cap, test, _ in CAPABILITIES]
        if pre:
            running = sum(1 for p in pre["programs"] if p["running"])
            row.append(f"{running}/{len(pre['programs'])}")
            row.append(pre["tc"])
            ok = run["tests"].get("verdict_and_capabilities") == "ok"
            row.append(("flows observed" if pre["flows"] else "NO FLOWS") + ("" if ok else " (**FAILED**)"))
            for c in pre["capabilities"]:
                if c.get("degraded"):
                    notes.setdefault((c["name"], c["degraded"]), []).append(label)
        else:
            row += ["?", "?", "not run"]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    if notes:
        out.append("¹ Degraded by design on these kernels:")
        out.append("")
        for (name, reason), labels in sorted(notes.items()):
            out.append(f"- **{name}** on {', '.join(labels)}: {reason}.")
        out.append("")
    out.append("What each column's test checks:")
    out.append("")
    for cap, test, what in CAPABILITIES:
        out.append(f"- **{cap}** (`{test}`): {what}.")
    out.append("- **programs**: eBPF programs running of those the collector loads; **tc**: how the flow")
    out.append("  programs attach; **preflight**: the verdict of the preflight behind")
    out.append("  `flowlake collector --check` (`verdict_and_capabilities`: every program and capability).")
    out.append("")
    costs = [(label, cost(results, label)) for label, _ in runs]
    costs = [(label, c) for label, c in costs if c]
    if costs:
        out.append("Per-packet cost of the flow programs (ingress + egress) over the minimal counter")
        out.append("(`ebpf/counter.bpf.c`), kernel `bpf_stats` run_time_ns / run_cnt, iperf3 between two")
        out.append("pods (`collector/bench/datapath.sh cost`; under TCG only the ratio means anything):")
        out.append("")
        out.append("| kernel | TCP flows ns | TCP counter ns | TCP x counter | UDP 64 B flows ns | UDP counter ns | UDP x counter |")
        out.append("|---|---|---|---|---|---|---|")
        for label, c in costs:
            out.append(f"| {label} | " + " | ".join(c) + " |")
        out.append("")
    times = ", ".join(f"{label} {run['seconds']} s" for label, run in runs)
    out.append(f"Last run: {total} s in all ({times}; each VM's time includes its boot).")
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()

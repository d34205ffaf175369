#!/usr/bin/env bash
# Cost of a running capture (docs/BENCHMARKS.md, "Packet capture"): iperf3 TCP from pod A to pod B
# without a capture and with a capture of pod A's veth (collector/examples/bench_capture.rs, the
# engine the collector runs), interleaved PAIRS times; and the capture's CPU per captured Gbit/s.
# With FLOWS=1 the collector's flow programs (collector/examples/bench_attach.rs) stay attached to
# every pod veth for the whole run, and each iperf3 run also reports the flow programs' kernel
# ns/packet (run_time_ns / run_cnt of flow_ingress + flow_egress, kernel.bpf_stats_enabled).
# Needs root and iperf3 (FLOWS=1: bpftool too). Traffic only between namespaces it creates.
#
#   cargo build --release -p flowlake-collector --example bench_capture --example bench_attach
#   collector/bench/capture.sh
#   FLOWS=1 collector/bench/capture.sh
#   TCPDUMP=1 collector/bench/capture.sh   # also tcpdump (libpcap's TPACKET_V3 ring) as the peer
#
# Env: CAPTURE (bench_capture binary), LOADER (bench_attach binary), PAIRS (3), SECS (seconds per
#      iperf3 run, 5), SNAPLEN (262144), OUT (pcapng path for the capture, default a file in a temp
#      dir; - discards), FLOWS (0), TCPDUMP (0).
set -euo pipefail

TARGET=${CARGO_TARGET_DIR:-/root/.cache/flowlake-target}
CAPTURE=${CAPTURE:-$TARGET/release/examples/bench_capture}
[ -x "$CAPTURE" ] || { echo "build it: cargo build --release -p flowlake-collector --example bench_capture" >&2; exit 1; }
FLOWS=${FLOWS:-0}
LOADER=${LOADER:-$TARGET/release/examples/bench_attach}
[ "$FLOWS" = 0 ] || [ -x "$LOADER" ] || { echo "build it: cargo build --release -p flowlake-collector --example bench_attach" >&2; exit 1; }
PAIRS=${PAIRS:-3}
SECS=${SECS:-5}
SNAPLEN=${SNAPLEN:-262144}
ID="flc$$"
NODE="${ID}n" A="${ID}a" B="${ID}b" VA="${ID}va" VB="${ID}vb"
LOG=$(mktemp -d)
OUT=${OUT:-$LOG/capture.pcapng}

OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
LOADER_PID=""

cleanup() {
	[ -n "$LOADER_PID" ] && kill "$LOADER_PID" 2>/dev/null && wait "$LOADER_PID" 2>/dev/null || true
	sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS"
	[ -f "$LOG/iperf.pid" ] && kill "$(cat "$LOG/iperf.pid")" 2>/dev/null || true
	for ns in "$A" "$B" "$NODE"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$LOG"
}
trap cleanup EXIT

ip netns add "$NODE"
ip -n "$NODE" link add br0 type bridge
ip -n "$NODE" link set br0 up
for p in "$A:$VA:10.79.0.2" "$B:$VB:10.79.0.3"; do
	IFS=: read -r ns veth ip <<<"$p"
	ip netns add "$ns"
	ip link add "$veth" netns "$NODE" type veth peer name eth0 netns "$ns"
	ip -n "$ns" addr add "$ip/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
	ip -n "$NODE" link set "$veth" master br0
	ip -n "$NODE" link set "$veth" up
done
ip netns exec "$B" iperf3 -s -D -I "$LOG/iperf.pid"
sleep 0.5

# The flow programs' summed run_time_ns and run_cnt ("ns runs"), when FLOWS=1.
flow_stats() {
	[ -n "$LOADER_PID" ] || { echo "0 0"; return; }
	sed -n 's/^ready .*progs=\([^ ]*\).*/\1/p' "$LOG/loader.out" | tr ',' '\n' | grep '^flow_' | cut -d: -f2 |
		while read -r id; do bpftool prog show id "$id" --json | jq -r '"\(.run_time_ns // 0) \(.run_cnt // 0)"'; done |
		awk '{ t += $1; n += $2 } END { print t + 0, n + 0 }'
}
# One iperf3 run A -> B: "receiver-Gbit/s flow-ns/packet" (the latter "-" without FLOWS=1).
gbits() {
	local before after g
	before=$(flow_stats)
	g=$(ip netns exec "$A" iperf3 -c 10.79.0.3 -t "$SECS" -J | jq '.end.sum_received.bits_per_second / 1e9')
	after=$(flow_stats)
	awk -v g="$g" -v b="$before" -v a="$after" 'BEGIN {
		split(b, x, " "); split(a, y, " "); n = y[2] - x[2]
		if (n > 0) printf "%.2f %.1f\n", g, (y[1] - x[1]) / n; else printf "%.2f -\n", g }'
}

if [ "$FLOWS" != 0 ]; then
	sysctl -qw kernel.bpf_stats_enabled=1
	"$LOADER" --netns "/var/run/netns/$NODE" >"$LOG/loader.out" 2>"$LOG/loader.err" &
	LOADER_PID=$!
	until grep -q '^ready' "$LOG/loader.out" 2>/dev/null; do
		kill -0 "$LOADER_PID" 2>/dev/null || { cat "$LOG/loader.err" >&2; exit 1; }
		sleep 0.05
	done
fi

# One iperf3 run with tcpdump on A's veth: "Gbit/s packets kernel-drops cpu-seconds".
with_tcpdump() {
	local pid g ticks
	ip netns exec "$NODE" tcpdump -i "$VA" -s "$SNAPLEN" -B 8192 -w "$LOG/peer.pcap" 2>"$LOG/tcpdump.err" &
	pid=$!
	until grep -q listening "$LOG/tcpdump.err" 2>/dev/null; do sleep 0.05; done
	sleep 0.5
	read -r g _ <<<"$(gbits)"
	sleep 1
	# utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat).
	ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
	kill -INT "$pid"
	wait "$pid" || true
	awk -v g="$g" -v t="$ticks" -v hz="$(getconf CLK_TCK)" '
		/packets captured/ { c = $1 } /dropped by kernel/ { d = $1 }
		END { printf "%s %s %s %.3f\n", g, c, d, t / hz }' "$LOG/tcpdump.err"
	rm -f "$LOG/peer.pcap"
}

peer_head=""
[ "${TCPDUMP:-0}" = 0 ] || peer_head=" | with tcpdump Gbit/s | tcpdump packets | tcpdump kernel drops | tcpdump CPU s"
echo "run | without capture Gbit/s | flow ns/packet | with capture Gbit/s | flow ns/packet | captured packets | lost | capture CPU s | CPU s per captured Gbit/s$peer_head"
for i in $(seq 1 "$PAIRS"); do
	read -r without without_ns <<<"$(gbits)"
	"$CAPTURE" --netns "/var/run/netns/$NODE" --interface "$VA" --secs $((SECS + 2)) \
		--snaplen "$SNAPLEN" --out "$OUT" >"$LOG/cap.out" &
	cap=$!
	until grep -q ready "$LOG/cap.out" 2>/dev/null; do sleep 0.05; done
	sleep 0.5
	read -r with with_ns <<<"$(gbits)"
	wait "$cap"
	line=$(tail -1 "$LOG/cap.out")
	packets=$(sed -E 's/.*packets=([0-9]+).*/\1/' <<<"$line")
	wire=$(sed -E 's/.*wire_bytes=([0-9]+).*/\1/' <<<"$line")
	lost=$(sed -E 's/.*lost=([0-9]+).*/\1/' <<<"$line")
	cpu=$(sed -E 's/.*cpu_seconds=([0-9.]+).*/\1/' <<<"$line")
	# Captured Gbit/s over the capture's whole run (SECS + 2 s).
	per=$(awk -v c="$cpu" -v w="$wire" -v s=$((SECS + 2)) 'BEGIN { g = w * 8 / s / 1e9; if (g > 0) printf "%.3f", c / g; else print "-" }')
	peer=""
	[ "${TCPDUMP:-0}" = 0 ] || peer=$(with_tcpdump | awk '{ printf " | %s | %s | %s | %s", $1, $2, $3, $4 }')
	printf '%s | %s | %s | %s | %s | %s | %s | %s | %s%s\n' "$i" "$without" "$without_ns" "$with" "$with_ns" \
		"$packets" "$lost" "$cpu" "$per" "$peer"
	rm -f "$OUT"
done

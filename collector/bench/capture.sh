#!/usr/bin/env bash
# Cost of a running capture (docs/BENCHMARKS.md, "Packet capture"): iperf3 TCP from pod A to pod B
# without a capture and with a capture of pod A's veth (collector/examples/bench_capture.rs, the
# engine the collector runs), interleaved PAIRS times; and the capture's CPU per captured Gbit/s.
# Needs root and iperf3. Traffic only between namespaces it creates.
#
#   cargo build --release -p flowlake-collector --example bench_capture
#   collector/bench/capture.sh
#
# Env: CAPTURE (bench_capture binary), PAIRS (3), SECS (seconds per iperf3 run, 5),
#      SNAPLEN (262144), OUT (pcapng path for the capture, default a file in a temp dir; - discards).
set -euo pipefail

TARGET=${CARGO_TARGET_DIR:-/root/.cache/flowlake-target}
CAPTURE=${CAPTURE:-$TARGET/release/examples/bench_capture}
[ -x "$CAPTURE" ] || { echo "build it: cargo build --release -p flowlake-collector --example bench_capture" >&2; exit 1; }
PAIRS=${PAIRS:-3}
SECS=${SECS:-5}
SNAPLEN=${SNAPLEN:-262144}
ID="flc$$"
NODE="${ID}n" A="${ID}a" B="${ID}b" VA="${ID}va" VB="${ID}vb"
LOG=$(mktemp -d)
OUT=${OUT:-$LOG/capture.pcapng}

cleanup() {
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

gbits() { # one iperf3 run A -> B, receiver Gbit/s
	ip netns exec "$A" iperf3 -c 10.79.0.3 -t "$SECS" -J | jq '.end.sum_received.bits_per_second / 1e9'
}

echo "run | without capture Gbit/s | with capture Gbit/s | captured packets | lost | capture CPU s | CPU s per captured Gbit/s"
for i in $(seq 1 "$PAIRS"); do
	without=$(gbits)
	"$CAPTURE" --netns "/var/run/netns/$NODE" --interface "$VA" --secs $((SECS + 2)) \
		--snaplen "$SNAPLEN" --out "$OUT" >"$LOG/cap.out" &
	cap=$!
	until grep -q ready "$LOG/cap.out" 2>/dev/null; do sleep 0.05; done
	sleep 0.5
	with=$(gbits)
	wait "$cap"
	line=$(tail -1 "$LOG/cap.out")
	packets=$(sed -E 's/.*packets=([0-9]+).*/\1/' <<<"$line")
	wire=$(sed -E 's/.*wire_bytes=([0-9]+).*/\1/' <<<"$line")
	lost=$(sed -E 's/.*lost=([0-9]+).*/\1/' <<<"$line")
	cpu=$(sed -E 's/.*cpu_seconds=([0-9.]+).*/\1/' <<<"$line")
	# Captured Gbit/s over the capture's whole run (SECS + 2 s).
	per=$(awk -v c="$cpu" -v w="$wire" -v s=$((SECS + 2)) 'BEGIN { g = w * 8 / s / 1e9; if (g > 0) printf "%.3f", c / g; else print "-" }')
	printf '%s | %.2f | %.2f | %s | %s | %s | %s\n' "$i" "$without" "$with" "$packets" "$lost" "$cpu" "$per"
	rm -f "$OUT"
done

#!/usr/bin/env bash
# Collector datapath benchmarks (docs/BENCHMARKS.md, "Collector datapath").
# Needs root, iperf3, bpftool, jq. Traffic only between namespaces it creates.
#
#   collector/bench/datapath.sh cost        # kernel run_time_ns/run_cnt per program vs the minimal counter
#   collector/bench/datapath.sh cost-flows  # the same with FLOWS distinct UDP flows at RATE (cache misses)
#   collector/bench/datapath.sh throughput  # iperf3 TCP + small-packet UDP, attached vs detached, interleaved
#   collector/bench/datapath.sh userspace   # loader CPU per 10k flows/s and RSS with 100k active flows
#   collector/bench/datapath.sh all
#
# Env: LOADER (bench_attach binary; default: release build, else debug build),
#      GEN (flow_gen binary), PAIRS (throughput pairs, 10), SECS (seconds per iperf3 run, 3),
#      COST_SECS (iperf3 seconds in the cost run, 10),
#      COUNTER_FIRST=1 (cost: attach the counter before the flow programs instead of after).
set -euo pipefail

MODE=${1:-all}
TARGET=${CARGO_TARGET_DIR:-/root/.cache/flowlake-target}
pick() { # first existing binary among release/debug
	for p in "$TARGET/release/examples/$1" "$TARGET/debug/examples/$1"; do
		[ -x "$p" ] && { echo "$p"; return; }
	done
	echo "build it: cargo build --release -p flowlake-collector --example $1" >&2
	exit 1
}
LOADER=${LOADER:-$(pick bench_attach)}
PAIRS=${PAIRS:-10}
SECS=${SECS:-3}
COST_SECS=${COST_SECS:-10}

ID="flb$$"
NODE="${ID}n"
A="${ID}a"
B="${ID}b"
VA="${ID}va"
VB="${ID}vb"
IP_A=10.78.0.2
IP_B=10.78.0.3
IP_NODE=10.78.0.1
LOG=$(mktemp -d)
LOADER_PID=""
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)

cleanup() {
	[ -n "$LOADER_PID" ] && kill "$LOADER_PID" 2>/dev/null && wait "$LOADER_PID" 2>/dev/null || true
	[ -f "$LOG/iperf.pid" ] && kill "$(cat "$LOG/iperf.pid")" 2>/dev/null || true
	for ns in "$A" "$B" "$NODE"; do ip netns del "$ns" 2>/dev/null || true; done
	sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS"
	rm -rf "$LOG"
}
trap cleanup EXIT

# A node namespace with a bridge (address IP_NODE) and two pods on veths, like a CNI.
ip netns add "$NODE"
ip -n "$NODE" link add br0 type bridge
ip -n "$NODE" addr add "$IP_NODE/24" dev br0
ip -n "$NODE" link set br0 up
ip -n "$NODE" link set lo up
for p in "$A:$VA:$IP_A" "$B:$VB:$IP_B"; do
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

# Starts the loader with the given flags; waits for its ready line.
start_loader() {
	"$LOADER" --netns "/var/run/netns/$NODE" "$@" >"$LOG/loader.out" 2>"$LOG/loader.err" &
	LOADER_PID=$!
	for _ in $(seq 1 300); do
		grep -q '^ready' "$LOG/loader.out" 2>/dev/null && return
		kill -0 "$LOADER_PID" 2>/dev/null || { cat "$LOG/loader.err" >&2; exit 1; }
		sleep 0.05
	done
	echo "loader not ready" >&2
	exit 1
}
stop_loader() {
	kill "$LOADER_PID"
	wait "$LOADER_PID" || true
	LOADER_PID=""
}
# "name id" lines of the loader's programs.
loader_progs() {
	sed -n 's/^ready .*progs=\([^ ]*\).*/\1/p' "$LOG/loader.out" | tr ',' '\n' | tr ':' ' '
}
# "name id run_time_ns run_cnt" for each of the loader's programs.
snapshot() {
	loader_progs | while read -r name id; do
		bpftool prog show id "$id" --json | jq -r --arg n "$name" '"\($n) \(.id) \(.run_time_ns // 0) \(.run_cnt // 0)"'
	done
}
# Runs iperf3 from A to B (extra flags "$@"), retrying when the server is still
# busy with the previous test; prints the jq filter $1 of its JSON.
iperf() {
	local filter=$1 out
	shift
	for _ in 1 2 3 4 5; do
		out=$(ip netns exec "$A" iperf3 -c "$IP_B" -J "$@" 2>/dev/null || true)
		if echo "$out" | jq -e '.error == null and (.end.sum != null or .end.sum_received != null)' >/dev/null 2>&1; then
			echo "$out" | jq "$filter"
			return
		fi
		sleep 1
	done
	echo "iperf3 failed: $(echo "$out" | jq -r .error 2>/dev/null)" >&2
	exit 1
}
tcp_run() { iperf '.end.sum_received.bits_per_second' -t "$1"; } # received bits/s
# 64-byte datagrams, unlimited rate; datagrams/s that arrived.
udp_run() { iperf '.end.sum | (.packets - .lost_packets) / .seconds' -u -l 64 -b 0 -t "$1"; }

cost() {
	local load=$1
	sysctl -qw kernel.bpf_stats_enabled=1
	local order=()
	[ "${COUNTER_FIRST:-0}" = 1 ] && order=(--counter-first)
	start_loader --counter "$VA" --counter "$VB" "${order[@]}"
	snapshot >"$LOG/before"
	case "$load" in
	tcp) tcp_run "$COST_SECS" >/dev/null ;;
	udp) udp_run "$COST_SECS" >/dev/null ;;
	flows) # FLOWS distinct UDP 5-tuples cycled at RATE packets/s, A -> node
		local gen
		gen=${GEN:-$(pick flow_gen)}
		ip netns exec "$NODE" "$gen" sink --addr "$IP_NODE" --ports 2 &
		local sink=$!
		ip netns exec "$A" "$gen" send --src "$IP_A" --dst "$IP_NODE" --flows "${FLOWS:-100000}" \
			--rate "${RATE:-40000}" --secs "$COST_SECS" >/dev/null
		kill "$sink" 2>/dev/null || true
		wait "$sink" 2>/dev/null || true
		;;
	esac
	snapshot >"$LOG/after"
	stop_loader
	sysctl -qw kernel.bpf_stats_enabled=0
	local what="iperf3 $load load ${COST_SECS}s, A -> B across the bridge"
	[ "$load" = flows ] && what="flow_gen ${FLOWS:-100000} UDP flows at ${RATE:-40000} packets/s ${COST_SECS}s, A -> node"
	echo "### datapath cost per packet, $what, counter $([ "${COUNTER_FIRST:-0}" = 1 ] && echo first || echo last)"
	printf "| %-18s | %12s | %10s | %9s |\n" program runs ns/run "x counter"
	echo "|--------------------|--------------|------------|-----------|"
	join <(sort "$LOG/before") <(sort "$LOG/after") | awk '
		{ name=$1; t[name]=$6-$3; n[name]=$7-$4 }
		END {
			c = n["count_packets"] ? t["count_packets"]/n["count_packets"] : 0
			for (k in t) if (n[k] > 0) {
				printf "| %-18s | %12d | %10.1f | %9.2f |\n", k, n[k], t[k]/n[k], (c ? t[k]/n[k]/c : 0)
			}
			fi = n["flow_ingress"] + n["flow_egress"]
			if (fi > 0) printf "| %-18s | %12d | %10.1f | %9.2f |\n", "flows (in+eg)", fi, (t["flow_ingress"]+t["flow_egress"])/fi, (c ? (t["flow_ingress"]+t["flow_egress"])/fi/c : 0)
		}' | sort
	echo
}

median() { sort -g | awk '{ v[NR]=$1 } END { if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'; }

throughput() {
	sysctl -qw kernel.bpf_stats_enabled=0
	: >"$LOG/tcp_off"
	: >"$LOG/tcp_on"
	: >"$LOG/udp_off"
	: >"$LOG/udp_on"
	for i in $(seq 1 "$PAIRS"); do
		# Alternate which half of the pair runs first, so drift cancels.
		if [ $((i % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
		for state in $order; do
			[ "$state" = on ] && start_loader
			tcp_run "$SECS" >>"$LOG/tcp_$state"
			udp_run "$SECS" >>"$LOG/udp_$state"
			[ "$state" = on ] && stop_loader
		done
		echo "pair $i: tcp off $(tail -1 "$LOG/tcp_off") on $(tail -1 "$LOG/tcp_on"); udp off $(tail -1 "$LOG/udp_off") on $(tail -1 "$LOG/udp_on")" >&2
	done
	local t0 t1 u0 u1
	t0=$(median <"$LOG/tcp_off")
	t1=$(median <"$LOG/tcp_on")
	u0=$(median <"$LOG/udp_off")
	u1=$(median <"$LOG/udp_on")
	echo "### throughput, $PAIRS interleaved pairs of ${SECS}s iperf3 runs (medians)"
	echo "| stream | detached | attached | attached / detached |"
	echo "|---|---|---|---|"
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "| TCP single stream (Gbit/s) | %.2f | %.2f | %.1f %% |\n", a/1e9, b/1e9, 100*b/a }'
	awk -v a="$u0" -v b="$u1" 'BEGIN { printf "| UDP 64 B, unlimited (kpps received) | %.0f | %.0f | %.1f %% |\n", a/1e3, b/1e3, 100*b/a }'
	echo
}

case "$MODE" in
cost) cost tcp; cost udp ;;
cost-flows) cost flows ;; # many flows: most packets miss the flow cache
throughput) throughput ;;
userspace) . "$(dirname "$0")/userspace.sh" ;;
all)
	cost tcp
	cost udp
	throughput
	. "$(dirname "$0")/userspace.sh"
	;;
*) echo "usage: $0 [cost|throughput|userspace|all]" >&2; exit 2 ;;
esac

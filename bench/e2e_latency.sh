#!/usr/bin/env bash
# Packet → queryable latency of the whole pipeline (issue 6 benchmark).
#
#   bench/e2e_latency.sh [PROBES]        # as root; builds flowlake in release
#
# A "pod" (network namespace with a veth to this host) sends one UDP datagram per
# probe to a fresh port at a random moment; `flowlake standalone --source ebpf`
# observes it, ships, ingests and commits it; the script polls the SQL endpoint
# until that flow is queryable and records the delay. Prints p50/p90/p99/max beside
# the bound the configuration implies (idle eviction + batch age + flush age).
set -euo pipefail
cd "$(dirname "$0")/.."
PROBES=${1:-30}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowlake-target}"
# The delay is set by timers (eviction, batching, flushing), not by CPU: a debug
# build measures the same (PROFILE=dev), a release build is the default.
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --bin flowlake -q
BIN="$CARGO_TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/flowlake"
DATA=$(mktemp -d)
NS=flkbench$$
PORT=18190
cleanup() {
  kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
ip netns add "$NS"
ip link add "flkb$$" type veth peer name eth0 netns "$NS"
ip addr add 10.99.0.1/24 dev "flkb$$"; ip link set "flkb$$" up
ip netns exec "$NS" ip addr add 10.99.0.2/24 dev eth0
ip netns exec "$NS" ip link set eth0 up
FLUSH_AGE=${FLUSH_AGE:-2s}
"$BIN" standalone --source ebpf --data-dir "$DATA" --listen 127.0.0.1:$PORT --flush-age "$FLUSH_AGE" \
  --log warn > "$DATA/standalone.log" 2>&1 &
PID=$!
sleep 3
query() {
  curl -s "http://127.0.0.1:$PORT/api/v1/sql" -H 'content-type: application/json' \
    -d "{\"sql\": \"select count(*) as n from flows where dst_port = $1\"}" | sed 's/.*"n":\([0-9]*\).*/\1/'
}
probe() {
  local port=$1
  sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", rand() * 20 }')"
  local t0; t0=$(date +%s.%N)
  ip netns exec "$NS" bash -c "echo probe > /dev/udp/10.99.0.1/$port" 2>/dev/null || true
  while [ "$(query "$port")" = "0" ]; do sleep 0.1; done
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }'
}
for i in $(seq 1 "$PROBES"); do probe $((40000 + i)) > "$DATA/probe.$i" & done
wait $(jobs -p | grep -v "^$PID$") 2>/dev/null || true
sort -n "$DATA"/probe.* > "$DATA/all"
n=$(wc -l < "$DATA/all")
pct() { awk -v p="$1" -v n="$n" 'NR == int((n - 1) * p) + 1 { print; exit }' "$DATA/all"; }
echo "probes: $n  ($PROFILE build, FLUSH_AGE=$FLUSH_AGE, collector idle timeout 5s, ship batch age 1s, query snapshot age 1s)"
echo "packet → queryable seconds: p50 $(pct 0.5)  p90 $(pct 0.9)  p99 $(pct 0.99)  max $(tail -n1 "$DATA/all")"

# Sourced by datapath.sh (topology, loader helpers): userspace CPU per 10k flows/s
# and RSS with 100k active flows. Pod A sends FLOWS distinct UDP 5-tuples at RATE
# packets/s to a sink in the node namespace (one observation point per flow: A's
# veth ingress, from_pod), so all FLOWS stay active in the kernel map and the
# active timeout (10 s) evicts them: FLOWS/10 flow records per second.
GEN=${GEN:-$(pick flow_gen)}
FLOWS=${FLOWS:-100000}
RATE=${RATE:-40000}
WARM=${WARM:-15}
WINDOW=${WINDOW:-30}
TICK=$(getconf CLK_TCK)

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
records_total() { grep '^records_total=' "$LOG/loader.out" | tail -1 | cut -d= -f2 || echo 0; }

ip netns exec "$NODE" "$GEN" sink --addr "$IP_NODE" --ports 2 &
SINK_PID=$!
start_loader
ip netns exec "$A" "$GEN" send --src "$IP_A" --dst "$IP_NODE" --flows "$FLOWS" --rate "$RATE" \
	--secs $((WARM + WINDOW + 2)) >"$LOG/gen.out" &
GEN_PID=$!
sleep "$WARM"
c0=$(cpu_ticks "$LOADER_PID")
r0=$(records_total)
t0=$(date +%s.%N)
sleep "$WINDOW"
c1=$(cpu_ticks "$LOADER_PID")
r1=$(records_total)
t1=$(date +%s.%N)
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$LOADER_PID/status")
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$LOADER_PID/status")
wait "$GEN_PID" || true
stop_loader
kill "$SINK_PID" 2>/dev/null || true
wait "$SINK_PID" 2>/dev/null || true
echo "### userspace: $FLOWS active flows at $RATE packets/s, ${WINDOW}s window after ${WARM}s warm-up"
echo "loader: $LOADER"
awk -v c0="$c0" -v c1="$c1" -v r0="$r0" -v r1="$r1" -v t0="$t0" -v t1="$t1" -v tick="$TICK" \
	-v rss="$rss" -v hwm="$hwm" 'BEGIN {
	dt = t1 - t0; cores = (c1 - c0) / tick / dt; fps = (r1 - r0) / dt
	printf "| measure | value |\n|---|---|\n"
	printf "| flow records/s evicted | %.0f |\n", fps
	printf "| loader CPU (user+sys), cores | %.4f |\n", cores
	printf "| CPU per 10k flows/s, cores | %.4f |\n", (fps > 0 ? cores / (fps / 10000) : 0)
	printf "| VmRSS with %s active flows, MiB | %.1f |\n", "'"$FLOWS"'", rss / 1024
	printf "| VmHWM (peak RSS), MiB | %.1f |\n", hwm / 1024
}'
echo "generator: $(cat "$LOG/gen.out")"
echo

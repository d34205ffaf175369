#!/usr/bin/env bash
# One result of ROWS rows (default 1 M: `SELECT * FROM flows LIMIT ROWS`, every column) fetched
# three ways from the same `flowlake query` process, interleaved RUNS times (docs/BENCHMARKS.md,
# "Flight SQL vs HTTP"):
#   flight      ADBC Flight SQL driver (Python DB-API, Go driver) → pyarrow.Table
#   http-arrow  POST /api/v1/sql format=arrow (urllib) → pyarrow IPC stream reader → pyarrow.Table
#   http-json   POST /api/v1/sql format=json (urllib): the bytes, then json.loads separately
# Times are the client's wall clock until it holds the result; bytes are the response body (HTTP)
# and the gRPC body (Flight) as the service's audit line counts them, with curl's download size of
# the two HTTP formats beside them as a check of that count.
#
#   PROFILE=release query/bench/flight.sh     # or PROFILE=dev (say which in the figures)
#
# Env: PROFILE (release), ROWS (1000000), RUNS (3), BENCH_DIR (/tmp/flowlake-flight-bench; the
# table is kept there for re-runs), TABLE_PROFILE (PROFILE: the profile of the `questions` bench that
# writes the table once; its rows do not depend on it).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/flowlake-target}
PROFILE=${PROFILE:-release}
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/flowlake-flight-bench}
TABLE_PROFILE=${TABLE_PROFILE:-$PROFILE}
python3 -c 'import adbc_driver_flightsql, pyarrow' 2>/dev/null || python3 -m pip install --quiet adbc-driver-flightsql pyarrow
dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
BIN=$CARGO_TARGET_DIR/$dir/flowlake

nice -n 10 cargo build -q --profile "$PROFILE" -p flowlake --bin flowlake
mkdir -p "$BENCH_DIR"
table="$BENCH_DIR/flows-$ROWS"
if [ ! -d "$table/_delta_log" ]; then
  rm -rf "$table" "$table.building"
  nice -n 10 cargo bench -q --profile "$TABLE_PROFILE" -p flowlake-query --bench questions -- \
    build --table "$table.building" --rows "$ROWS" --start 2026-01-01T00:00:00Z --duration 1h --seed 1
  mv "$table.building" "$table"
fi

log="$BENCH_DIR/query.log"
HTTP=127.0.0.1:17480 FLIGHT=127.0.0.1:17481
"$BIN" --log "warn,flowlake::audit=info" query --table "$table" --listen "$HTTP" --flight-listen "$FLIGHT" \
  --max-rows "$((ROWS + 1))" --timeout 600s --rollups false --audit-sql none 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.2; done

SQL="SELECT * FROM flows LIMIT $ROWS"
for run in $(seq "$RUNS"); do
  for fmt in arrow json; do
    curl -s -o /dev/null -w "curl $fmt run=$run bytes=%{size_download} seconds=%{time_total}\n" \
      "http://$HTTP/api/v1/sql" -H 'content-type: application/json' -d "{\"sql\": \"$SQL\", \"format\": \"$fmt\"}"
  done
done
python3 - "$HTTP" "$FLIGHT" "$SQL" "$RUNS" "$ROWS" <<'PY'
import json, sys, time, urllib.request
import pyarrow.ipc as ipc
import adbc_driver_flightsql.dbapi as flight

http, grpc, sql, runs, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
conn = flight.connect(f"grpc://{grpc}", autocommit=True)

def post(fmt):
    req = urllib.request.Request(f"http://{http}/api/v1/sql",
                                 data=json.dumps({"sql": sql, "format": fmt}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.read()

def via_flight():
    cur = conn.cursor()
    cur.execute(sql)
    t = cur.fetch_arrow_table()
    cur.close()
    return t.num_rows, ""

def via_arrow():
    return ipc.open_stream(post("arrow")).read_all().num_rows, ""

def via_json():
    body = post("json")
    t0 = time.perf_counter()
    n = len(json.loads(body))
    return n, f" json_loads_s={time.perf_counter() - t0:.2f}"

for run in range(1, runs + 1):
    for name, f in (("flight", via_flight), ("http-arrow", via_arrow), ("http-json", via_json)):
        t0 = time.perf_counter()
        n, extra = f()
        assert n == rows, (name, n)
        print(f"client {name} run={run} rows={n} seconds={time.perf_counter() - t0:.2f}{extra}", flush=True)
PY
kill $server; wait $server 2>/dev/null || true
trap - EXIT
# The service's own count of the bytes it sent, per call (GetFlightInfo and DoGet for Flight).
# (The log may carry ANSI colours: stripped first.)
sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'path=[^ ]* .*bytes=[0-9]*' \
  | sed -E 's/.*path=([^ ]*).* bytes=([0-9]*).*/audit \1 bytes=\2/' | sort | uniq -c
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); profile $PROFILE; commit $(git rev-parse --short HEAD)"

#!/usr/bin/env bash
# Query benchmark: the per-pod questions (per pod and ranked across pods) through
# Flowlake's QueryEngine (release) and DuckDB on the same SQL over the same Parquet
# files, p50 of RUNS runs after one warm-up each. Flowlake runs twice: `exact` (the
# flow rows only) and `rollups` (as its endpoints answer: hourly rollups where current).
#
#   query/bench/run.sh                 # 10 M rows
#   ROWS="10000000 100000000" query/bench/run.sh
#   ROUNDS=3 query/bench/run.sh        # engines alternate, 3 rounds each (noisy machine)
#   MODES=exact query/bench/run.sh     # the flow rows only
#
# Tables are built once per row count and layout under $BENCH_DIR (kept for re-runs), by
# the ingester's own sort and Parquet writer (LAYOUT=ingester; LAYOUT=parquet-rs: delta-rs's
# writer with the Parquet crate's defaults). Rebuild (remove the table) after a change to
# what the ingester writes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/flowlake-target}
ROWS=${ROWS:-10000000}
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-1}
MODES=${MODES:-exact rollups}
LAYOUT=${LAYOUT:-ingester}
BENCH_DIR=${BENCH_DIR:-/tmp/flowlake-query-bench}
START=2026-01-01T00:00:00Z
END=2026-01-02T00:00:00Z
THREADS=${THREADS:-$(nproc)}
python3 -c 'import duckdb' 2>/dev/null || pip install --quiet duckdb

bench() { cargo bench -q --profile release -p flowlake-query --bench questions -- "$@"; }
mkdir -p "$BENCH_DIR"
for n in $ROWS; do
  table="$BENCH_DIR/flows-$n-$LAYOUT"
  if [ ! -d "$table/_delta_log" ]; then
    # Built aside and renamed when complete: a killed build (e.g. out of memory at
    # 100 M rows) never leaves a partial table that a later run would measure.
    rm -rf "$table" "$table.building" "$table.gen"
    # glibc's per-thread arenas keep the freed Arrow buffers of each sorted chunk: 2
    # arenas halve the build's peak RSS (6 GB at 100 M rows with it).
    MALLOC_ARENA_MAX=2 bench build --table "$table.building" --rows "$n" --start "$START" --duration 24h --seed 1 \
      --layout "$LAYOUT"
    mv "$table.building" "$table"
  fi
  # Hourly rollups (what `flowlake query` builds in the background); idempotent.
  case " $MODES " in *" rollups "*) bench rollup --table "$table" ;; esac
  for mode in $MODES; do
    out="$BENCH_DIR/results-$n-$mode.json"
    run=(run --table "$table" --from "$START" --to "$END" --runs "$RUNS"
      --target-partitions "$THREADS" --mode "$mode" --out "$out")
    bench "${run[@]}"
    # Later rounds: the same run again, after each DuckDB round.
    python3 query/bench/duckdb_compare.py "$out" "$table" --runs "$RUNS" --threads "$THREADS" \
      --label "($n rows, $mode)" --markdown "$BENCH_DIR/table-$n-$mode.md" --rounds "$ROUNDS" \
      --rerun "cargo bench -q --profile release -p flowlake-query --bench questions -- ${run[*]@Q}"
  done
done

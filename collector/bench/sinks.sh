#!/usr/bin/env bash
# Per-sink cost in the collector: synthetic flow records at RATE flows/s through
# the sink layer with 0, 1, 2 and 3 sinks in one run (collector/examples/bench_sinks.rs;
# the receivers run in a child process and are not counted).
#
#   collector/bench/sinks.sh            # RATE=10000 SECS=20
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${RATE:-10000}
SECS=${SECS:-20}
cargo build -q --release -p flowlake-collector --example bench_sinks
target="${CARGO_TARGET_DIR:-target}/release/examples/bench_sinks"
"$target" --rate "$RATE" --secs "$SECS"

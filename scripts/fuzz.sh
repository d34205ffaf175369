#!/usr/bin/env bash
# Runs the `ipc_decode` cargo-fuzz target (wire crate: Content-Encoding, Arrow IPC
# decode, flow-schema validation) for a bounded time. Not run by CI (too long).
#
#   ./scripts/fuzz.sh            # 900 s
#   ./scripts/fuzz.sh 1800       # seconds to fuzz
#   ./scripts/fuzz.sh 60 -dict=x # extra arguments go to libFuzzer
#
# Needs nightly (`rustup toolchain install nightly`); installs cargo-fuzz if missing.
# Seeds: fuzz/seeds/ipc_decode (committed; `cargo run -p flowlake-wire --example
# fuzz_seeds -- fuzz/seeds/ipc_decode` remakes them). New inputs go to
# fuzz/corpus/ipc_decode, crashes to fuzz/artifacts/ipc_decode (both ignored by git).
# One process (no -jobs: libFuzzer would fork workers logging to fuzz-N.log), 2 GiB RSS limit, inputs up to 64 KiB: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_FUZZ="${1:-900}"
shift || true
TARGET_DIR="${FLOWLAKE_FUZZ_TARGET_DIR:-$HOME/.cache/flowlake-fuzz-target}"

if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
mkdir -p fuzz/corpus/ipc_decode
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo +nightly fuzz run ipc_decode \
  --target-dir "$TARGET_DIR" \
  fuzz/corpus/ipc_decode fuzz/seeds/ipc_decode -- \
  -max_total_time="$SECONDS_TO_FUZZ" -rss_limit_mb=2048 \
  -max_len=65536 -print_final_stats=1 "$@"

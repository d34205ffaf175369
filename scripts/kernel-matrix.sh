#!/usr/bin/env bash
# The kernel matrix: the collector's datapath tests on Debian's LTS kernels,
# each booted in QEMU with virtme-ng (the host's root file system shared over
# 9p, TCG: no nested KVM), and on the host kernel. Writes
# docs/compatibility.md (kernel x capability) from what the runs found.
#
#   ./scripts/kernel-matrix.sh            # every kernel
#   KERNELS="6.1" ./scripts/kernel-matrix.sh
#   # a subset of the tests (names from TESTS below, the part after the
#   # last `::` is enough), one kernel, no host run:
#   KERNELS=5.10 FLOWLAKE_MATRIX_HOST=0 \
#     FLOWLAKE_MATRIX_TESTS="wire_packets_count_gso_segments flows_equal_tcpdump_capture_exactly" \
#     ./scripts/kernel-matrix.sh
#
# Only a full run (every test, the default kernels and the host) writes
# docs/compatibility.md; a partial one writes its report to
# $FLOWLAKE_MATRIX_RESULTS/compatibility.md (default under the cache) instead.
#
# Kernel packages come from the Debian archive the host's apt uses
# (scripts/debian-mirror.sh) through a private apt state (the
# host's apt configuration is not touched) and are cached in
# $FLOWLAKE_KERNEL_CACHE (default ~/.cache/flowlake-kernels), outside the clone.
# Needs root, qemu-system-x86_64, vng (PyPI virtme-ng), busybox and depmod;
# without them it skips with the reason, or fails when
# FLOWLAKE_REQUIRE_PRIVILEGED=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE=${FLOWLAKE_KERNEL_CACHE:-$HOME/.cache/flowlake-kernels}
# suite:label — the generic amd64 flavour (it has the 9p modules virtme-ng needs)
# of the kernel line `label`, the newest the suite has.
ALL_KERNELS="bullseye:5.10 bookworm:6.1 bookworm-backports:6.12 trixie-backports:6.18"
# 6.18 in a VM is the benchmark's reference (FLOWLAKE_MATRIX_BENCH=1): the host
# runs the same kernel line natively, so the two runs show what emulation
# alone does to the per-packet cost ratio (docs/BENCHMARKS.md).
if [ "${FLOWLAKE_MATRIX_BENCH:-}" = 1 ]; then
  DEFAULT_KERNELS="5.10 6.1 6.12 6.18"
else
  DEFAULT_KERNELS="5.10 6.1 6.12"
fi
KERNELS=${KERNELS:-$DEFAULT_KERNELS}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/flowlake-target}
# The datapath tests that matter, by capability (libtest name filters).
TESTS=(
  datapath::tests::flows_equal_tcpdump_capture_exactly
  datapath::tests::dns_queries_and_responses_with_latency
  datapath::tests::lost_segments_show_retransmits_and_rtt
  datapath::tests::drops_have_kernel_reason_names
  datapath::health::retransmits_equal_the_kernel_count_on_the_sending_row
  datapath::health::resets_counted_once_on_the_sending_pod_row
  datapath::node::node_socket_drops_are_node_level
  datapath::dns::large_dns_over_udp_tcp_ipv6_and_from_the_node
  datapath::eviction::full_flow_map_losses_are_exactly_what_is_missing
  datapath::gso::wire_packets_count_gso_segments
  datapath::l3::tun_traffic_counted_exactly
  datapath::capture::capture_of_a_pod_veth_equals_tcpdump_per_direction
  datapath::capture::packets_the_kernel_could_not_deliver_are_counted_in_the_summary_and_the_file
  datapath::capture_select::pods_on_a_bridge_resolve_to_their_ports_before_any_traffic
  datapath::preflight::verdict_and_capabilities
)
# A full run: every test, the default kernels and the host.
FULL=1
[ "$KERNELS" = "$DEFAULT_KERNELS" ] || FULL=0
[ "${FLOWLAKE_MATRIX_HOST:-1}" = 1 ] || FULL=0
if [ -n "${FLOWLAKE_MATRIX_TESTS:-}" ]; then
  chosen=()
  for want in $FLOWLAKE_MATRIX_TESTS; do
    found=""
    for t in "${TESTS[@]}"; do
      case "$t" in "$want" | *"::$want") found=$t ;; esac
    done
    [ -n "$found" ] || { echo "kernel-matrix: no test $want in the matrix (${TESTS[*]})" >&2; exit 2; }
    chosen+=("$found")
  done
  [ "${#chosen[@]}" = "${#TESTS[@]}" ] || FULL=0
  TESTS=("${chosen[@]}")
fi

skip() {
  if [ "${FLOWLAKE_REQUIRE_PRIVILEGED:-}" = 1 ]; then
    echo "kernel-matrix: cannot run: $1" >&2
    exit 1
  fi
  echo "kernel-matrix: skipped: $1 (set FLOWLAKE_REQUIRE_PRIVILEGED=1 to fail instead)" >&2
  exit 0
}
[ "$(id -u)" -eq 0 ] || skip "not root"
for tool in qemu-system-x86_64 vng busybox depmod dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || skip "no $tool"
done

MIRROR=$(./scripts/debian-mirror.sh) || skip "no Debian archive in apt's sources"
start=$(date +%s)

# apt-get with a private state, cache and sources list for one suite.
apt_suite() {
  local suite=$1
  shift
  local d="$CACHE/apt/$suite"
  mkdir -p "$d/state/lists/partial" "$d/cache/archives/partial" "$d/etc/apt.conf.d" "$d/etc/preferences.d"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $suite main" >"$d/etc/sources.list"
  "$@" -o Dir::State="$d/state" -o Dir::Cache="$d/cache" -o Dir::Etc="$d/etc" \
    -o Dir::Etc::SourceList="$d/etc/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root
}

# Prints the kernel image of a kernel line from a suite, fetching and
# unpacking it once: the suite's linux-image-amd64 when it is of that line,
# else the newest linux-image-<line>.*-amd64 package the suite has.
kernel_image() {
  local suite=$1 line=$2 img
  img=$(ls "$CACHE"/"$suite"/"$line"[.-]*/boot/vmlinuz-* 2>/dev/null | head -1 || true)
  if [ -z "$img" ]; then
    apt_suite "$suite" apt-get -qq update >&2
    local pkg
    pkg=$(apt_suite "$suite" apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    case "$pkg" in
    linux-image-"$line".* | linux-image-"$line"-*) ;;
    *) pkg=$(apt_suite "$suite" apt-cache pkgnames "linux-image-$line." |
      grep -E "^linux-image-$line\.[0-9.]+[-+][^-]*-amd64\$" | sort -V | tail -1) ;;
    esac
    [ -n "$pkg" ] || { echo "kernel-matrix: no $line kernel package in $suite" >&2; return 1; }
    local deb="$CACHE/apt/$suite/debs"
    mkdir -p "$deb"
    (cd "$deb" && apt_suite "$suite" apt-get -qq download "$pkg" >&2)
    local ver=${pkg#linux-image-} dir
    dir="$CACHE/$suite/$ver"
    mkdir -p "$dir"
    dpkg-deb -x "$deb"/"$pkg"_*.deb "$dir"
    # Newer packages keep modules under /usr/lib (merged /usr).
    [ -e "$dir/lib" ] || ln -s usr/lib "$dir/lib"
    img=$(ls "$dir"/boot/vmlinuz-* | head -1)
  fi
  echo "$img"
}

# The collector's integration test binary, built on the host (or given).
BIN=${FLOWLAKE_MATRIX_BIN:-$(cargo test -p flowlake-collector --test main --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)}
[ -x "$BIN" ] || { echo "kernel-matrix: cannot build the collector test binary" >&2; exit 1; }

# Kept after the run (test output and VM consoles) for a look at failures.
# A partial run keeps the last full run's results.
if [ "$FULL" = 1 ]; then
  RESULTS=${FLOWLAKE_MATRIX_RESULTS:-$CACHE/last-run}
else
  RESULTS=${FLOWLAKE_MATRIX_RESULTS:-$CACHE/partial-run}
fi
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

# FLOWLAKE_MATRIX_BENCH=1: also the per-packet cost benchmark on each kernel
# (collector/bench/datapath.sh cost; docs/BENCHMARKS.md), with a copy of the
# loader it needs.
LOADER=""
if [ "${FLOWLAKE_MATRIX_BENCH:-}" = 1 ]; then
  cargo build -p flowlake-collector --example bench_attach >&2
  cp "$CARGO_TARGET_DIR/debug/examples/bench_attach" "$RESULTS/bench_attach"
  LOADER=$RESULTS/bench_attach
fi

# A copy: a build running meanwhile may replace cargo's.
cp "$BIN" "$RESULTS/collector-tests"
BIN=$RESULTS/collector-tests

# Runs the tests in the current kernel, results into $1.
GUEST=$RESULTS/guest.sh
cat >"$GUEST" <<EOF
#!/bin/sh
out=\$1
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mkdir -p /var/run/netns
modprobe tun 2>/dev/null
uname -r >"\$out/kernel"
cd "\$out"
# One test per run, each timed (times.txt: where a slow kernel spends its time).
rc=0
: >"\$out/tests.txt"
: >"\$out/times.txt"
for t in ${TESTS[*]}; do
  t0=\$(date +%s)
  FLOWLAKE_REQUIRE_PRIVILEGED=1 FLOWLAKE_MATRIX_OUT="\$out" "$BIN" --exact "\$t" >>"\$out/tests.txt" 2>&1 || rc=1
  echo "\$((\$(date +%s) - t0)) \$t" >>"\$out/times.txt"
done
echo \$rc >"\$out/rc"
if [ -n "$LOADER" ]; then
  LOADER="$LOADER" COST_SECS=${COST_SECS:-10} "$ROOT/collector/bench/datapath.sh" cost >"\$out/cost.txt" 2>"\$out/cost.err"
fi
EOF
chmod +x "$GUEST"

run_kernel() {
  local label=$1 suite=$2 out="$RESULTS/$1" img t0
  mkdir -p "$out"
  img=$(kernel_image "$suite" "$label")
  t0=$(date +%s)
  timeout 900 vng --run "$img" --disable-kvm --force-9p --memory 2G --cpus 2 \
    --rwdir "$RESULTS" -v -e "$GUEST $out" >"$out/console.txt" 2>&1 || true
  echo $(($(date +%s) - t0)) >"$out/seconds"
  [ -f "$out/rc" ] || { echo 1 >"$out/rc"; echo "no result: see the console" >>"$out/tests.txt"; tail -30 "$out/console.txt" >>"$out/tests.txt"; }
  echo "kernel-matrix: $label ($(cat "$out/kernel" 2>/dev/null || echo '?')): exit $(cat "$out/rc") in $(cat "$out/seconds")s" >&2
}

for entry in $ALL_KERNELS; do
  suite=${entry%%:*}
  label=${entry#*:}
  case " $KERNELS " in *" $label "*) run_kernel "$label" "$suite" ;; esac
done

# The host kernel, directly.
if [ "${FLOWLAKE_MATRIX_HOST:-1}" = 1 ]; then
  mkdir -p "$RESULTS/host"
  t0=$(date +%s)
  sh "$GUEST" "$RESULTS/host"
  echo $(($(date +%s) - t0)) >"$RESULTS/host/seconds"
  echo "kernel-matrix: host ($(cat "$RESULTS/host/kernel")): exit $(cat "$RESULTS/host/rc") in $(cat "$RESULTS/host/seconds")s" >&2
fi

total=$(($(date +%s) - start))
# A partial run's report stays beside its results: docs/compatibility.md is
# the full matrix only.
REPORT=docs/compatibility.md
[ "$FULL" = 1 ] || REPORT=$RESULTS/compatibility.md
python3 scripts/kernel_matrix_report.py "$RESULTS" "$total" >"$REPORT"
echo "kernel-matrix: wrote $REPORT (${total}s)" >&2

failed=0
for d in "$RESULTS"/*/; do
  [ -f "$d/rc" ] || continue
  if [ "$(cat "$d/rc")" != 0 ]; then
    failed=1
    echo "kernel-matrix: FAILED on $(basename "$d"):" >&2
    grep -E "^test .* FAILED|panicked|assert" "$d/tests.txt" | head -20 >&2 || true
  fi
done
exit $failed

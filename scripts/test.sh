#!/usr/bin/env bash
# Sets up what Flowlake's tests need (idempotent) and runs them all.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -p flowlake-schemas   # extra arguments go to `cargo test`
#
# Tests that need root, BPF or a tool skip with a printed reason when it is missing;
# with FLOWLAKE_REQUIRE_PRIVILEGED=1 (CI) they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(clang llvm libbpf-dev bpftool iproute2 nftables iptables tcpdump tshark iperf3 dnsmasq prometheus nfdump qemu-system-x86 kmod busybox-static golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev podman runc debootstrap curl)
PIP_PACKAGES=(pyarrow pandas duckdb deltalake polars "moto[server]" virtme-ng adbc-driver-flightsql)
# Azurite 3.36+ needs node >= 21; 3.35.0 runs on Debian's/NodeSource's node 20.
AZURITE_VERSION=3.35.0

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "test.sh: not root or no apt-get; missing packages (${missing[*]}) — their tests will skip" >&2
    return 0
  fi
  echo "test.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; the default answer is fine.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package starts a Prometheus service; tests run their own.
  systemctl disable --now prometheus >/dev/null 2>&1 || true
}

install_pip() {
  if ! command -v python3 >/dev/null; then
    echo "test.sh: no python3 — cross-reader tests will skip" >&2
    return 0
  fi
  if ! python3 -c "import pyarrow, pandas, duckdb, deltalake, polars, moto, adbc_driver_flightsql" 2>/dev/null || ! command -v vng >/dev/null; then
    echo "test.sh: installing ${PIP_PACKAGES[*]}" >&2
    python3 -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" \
      || echo "test.sh: pip install failed — cross-reader tests will skip" >&2
    # Under pyenv, new console scripts (vng) need their shims made.
    if command -v pyenv >/dev/null; then pyenv rehash || true; fi
  fi
}

install_npm() {
  command -v azurite-blob >/dev/null && return 0
  if ! command -v npm >/dev/null; then
    echo "test.sh: no npm — the Azure (Azurite) tests will skip" >&2
    return 0
  fi
  echo "test.sh: installing azurite@${AZURITE_VERSION}" >&2
  npm install -g --silent --no-fund --no-audit "azurite@${AZURITE_VERSION}" \
    || echo "test.sh: npm install failed — the Azure (Azurite) tests will skip" >&2
}

install_apt
install_pip
install_npm
# The kernel matrix (docs/compatibility.md) with the full run only. It runs
# first and its failure does not stop the rest: cargo's summary stays last and
# the exit status is non-zero when either failed.
matrix=0
if [ $# -eq 0 ]; then
  ./scripts/kernel-matrix.sh || matrix=$?
fi
cargo test --workspace "$@"
if [ "$matrix" -ne 0 ]; then
  echo "test.sh: the kernel matrix failed (exit $matrix); see its output above" >&2
  exit "$matrix"
fi

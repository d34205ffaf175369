#!/usr/bin/env bash
# Prints the Debian archive this machine's apt uses (its first main-archive
# URI), so scripts that fetch Debian packages outside apt's own state (the
# kernel matrix, the podman base image) use the same mirror as the host.
# FLOWLAKE_DEBIAN_MIRROR overrides it.
set -euo pipefail
if [ -n "${FLOWLAKE_DEBIAN_MIRROR:-}" ]; then
  echo "$FLOWLAKE_DEBIAN_MIRROR"
  exit 0
fi
uris=$(
  {
    # deb822 sources: "URIs: <uri> ..."
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
    # one-line sources: "deb [options] <uri> <suite> ..."
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p'
  } | grep -E '^https?://' | grep -v -E 'security|snapshot' || true
)
mirror=$(echo "$uris" | grep -E '/debian/?$' | head -n1)
if [ -z "$mirror" ]; then
  echo "debian-mirror: no Debian archive in this machine's apt sources; set FLOWLAKE_DEBIAN_MIRROR" >&2
  exit 1
fi
echo "${mirror%/}"

#!/usr/bin/env bash
# Builds the qqmx image with podman from a static binary compiled on this machine:
# the Dockerfile's `runtime` stage with BINARY_FROM=prebuilt (no base image is pulled).
# Usage: scripts/build-image.sh [TAG]   (default qqmx:test)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-qqmx:test}"

RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --features cli --target x86_64-unknown-linux-gnu

# Podman without a system configuration: no default ulimits (setrlimit is refused in
# containers like this one), cgroupfs and runc.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF="${TMPDIR:-/tmp}/qqmx-containers.conf"
  printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' \
    > "$CONTAINERS_CONF"
fi
podman build --quiet --format docker --target runtime --build-arg BINARY_FROM=prebuilt -t "$tag" -f Dockerfile . >/dev/null
echo "$tag"

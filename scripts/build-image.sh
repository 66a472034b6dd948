#!/usr/bin/env bash
# Builds the qqmx image with podman from a static binary compiled on this machine: the
# Dockerfile's `runtime` stage with BINARY_FROM=prebuilt, the very stage `docker build .`
# ends with (see the Dockerfile), so no base image is pulled and nothing can drift.
# Usage: scripts/build-image.sh [TAG]   (default qqmx:test; prints the tag)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-qqmx:test}"

# Its own target directory (target/x86_64-unknown-linux-gnu), so the static build and
# the ordinary builds do not rebuild each other's dependencies.
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --features cli --target x86_64-unknown-linux-gnu

# Podman without a system configuration: no default ulimits (setrlimit is refused in
# containers like this one), cgroupfs and runc.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF="${TMPDIR:-/tmp}/qqmx-containers.conf"
  printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' \
    > "$CONTAINERS_CONF"
fi
old="$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
# --format docker: the OCI image format has no HEALTHCHECK.
podman build --quiet --format docker --target runtime --build-arg BINARY_FROM=prebuilt \
  -t "$tag" -f Dockerfile . >/dev/null
new="$(podman image inspect --format '{{.Id}}' "$tag")"
# The image the tag named before is left nameless: remove it (unless a container uses it).
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  podman rmi "$old" >/dev/null 2>&1 || true
fi
echo "$tag"

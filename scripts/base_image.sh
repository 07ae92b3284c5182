#!/usr/bin/env bash
# Make the local OS + Python base image every project image builds FROM, once.
#
# No image registry is reachable on the machines this project is built on, so the base is
# made from Debian packages: `debootstrap --variant=minbase bookworm` with Debian's python3
# (3.11, the lock's target) and python3-venv, imported with `docker import`. The machine's
# system CA bundle (the one pip uses) replaces Debian's so pip inside builds reaches the
# package index through the same TLS setup as the host. Idempotent: nothing is done when
# the image already exists (--force rebuilds it).
#
# Usage: scripts/base_image.sh [--force] [IMAGE]   (IMAGE default: python -m pipelines.images base)
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
image="${1:?usage: base_image.sh [--force] IMAGE}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ca_bundle="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"

if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image present (scripts/base_image.sh --force $image rebuilds it)"
  exit 0
fi
for tool in debootstrap docker; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install debootstrap docker.io)" >&2; exit 2; }
done

root="$(mktemp -d "${TMPDIR:-/var/tmp}/base-image.XXXXXX")"
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
echo "debootstrap $suite into $root (minbase + python3, python3-venv)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
if [ -s "$ca_bundle" ]; then
  cp "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
fi
# Nothing that is not needed at run time: apt caches, package lists, docs, man pages.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase $suite + python3 python3-venv" \
  - "$image" >/dev/null
echo "base image $image made in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"

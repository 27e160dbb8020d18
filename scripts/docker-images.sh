#!/usr/bin/env bash
# Builds, without an image registry, the images convlab's stack starts from: a Debian bookworm
# base (debootstrap, Python 3.11, the host's CA bundle) for `docker build --build-arg
# BASE_IMAGE=convlab-base`, and stand-ins for the official postgres and redis images from
# Debian's packages (tests/compose/postgres, tests/compose/redis). Each is tagged with a hash of
# what it is made from and skipped when that tag exists, so a second run takes a second; each is
# also tagged `latest`, the tag tests/compose/docker-compose.test.yml names. Needs root (debootstrap) and a
# running Docker engine (scripts/docker-engine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "docker-images: $*" >&2; }

# One at a time: test processes that start containers call this together.
exec 9>"${TMPDIR:-/tmp}/convlab-docker-images.lock"
flock 9

PACKAGES=python3,python3-venv,python3-pip,ca-certificates
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

tag_of() { sha256sum | cut -c1-12; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }

base_tag="$( (echo "$PACKAGES"; cat "$CA_BUNDLE") | tag_of)"
if ! exists "convlab-base:$base_tag"; then
    if [ "$(id -u)" != 0 ] || ! command -v debootstrap >/dev/null; then
        say "the base image needs debootstrap, run as root (apt-get install debootstrap)."
        exit 1
    fi
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    say "building convlab-base:$base_tag with debootstrap (about a minute)"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >/dev/null
    # The host's CA bundle, also where update-ca-certificates (run by later installs) keeps it.
    cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
    cp "$CA_BUNDLE" "$root/usr/local/share/ca-certificates/host-bundle.crt"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "convlab-base:$base_tag" >/dev/null
fi
docker tag "convlab-base:$base_tag" convlab-base:latest

for service in postgres redis; do
    context="tests/compose/$service"
    tag="$( (echo "$base_tag"; cat "$context"/*) | tag_of)"
    if ! exists "convlab-$service-standin:$tag"; then
        say "building convlab-$service-standin:$tag from Debian's packages"
        docker build --quiet --network host --build-arg BASE_IMAGE="convlab-base:$base_tag" \
            -t "convlab-$service-standin:$tag" "$context" >/dev/null
    fi
    docker tag "convlab-$service-standin:$tag" "convlab-$service-standin:latest"
done

#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs Debian's docker.io and docker-compose and starts
# dockerd when root; otherwise exits non-zero, saying what is missing.
set -euo pipefail

say() { echo "docker-engine: $*" >&2; }

# One at a time: test processes that start containers call this together.
exec 9>"${TMPDIR:-/tmp}/convlab-docker-engine.lock"
flock 9

if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        say "no Docker engine or docker-compose, and not root to install them (apt-get install docker.io docker-compose)."
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        say "no Docker engine and no apt-get to install one: install Docker and docker-compose."
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 docker.io docker-compose debootstrap >/dev/null
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "dockerd is not running and only root can start it here (sudo dockerd &)."
    exit 1
fi
# A dockerd that died (killed with the session that started it) leaves its pid file behind,
# and a new one refuses to start while it is there.
pid_file=/var/run/docker.pid
if [ -f "$pid_file" ] && ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    say "removing $pid_file, left by a dockerd that is gone"
    rm -f "$pid_file" /var/run/docker/containerd/containerd.pid
fi
nohup setsid dockerd >/var/log/dockerd.log 2>&1 9>&- &  # not holding the lock
for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
done
say "dockerd did not answer within 60 s; its log is /var/log/dockerd.log:"
tail -20 /var/log/dockerd.log >&2
exit 1

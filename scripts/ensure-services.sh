#!/usr/bin/env bash
# Makes sure the services the test suite talks to are there: PostgreSQL and Redis running
# (started if stopped); redis-server, Debian's docker-compose, Prometheus, Chromium with its
# driver for the dashboard's browser tests, faketime, and wrk for `make bench`, installed
# (when root).
set -euo pipefail

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-services: $* missing and not root; install it (apt-get install $*)." >&2
        return 0
    fi
    apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v redis-server >/dev/null || apt_install redis-server
command -v docker-compose >/dev/null || apt_install docker-compose
command -v prometheus >/dev/null || apt_install prometheus
command -v chromedriver >/dev/null || apt_install chromium chromium-driver
command -v wrk >/dev/null || apt_install wrk  # the query benchmark's load generator
command -v faketime >/dev/null || apt_install faketime  # a worker whose clock is off, in tests

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

#!/usr/bin/env bash
# Makes sure the services the test suite talks to are there: PostgreSQL and Redis installed
# (when root, from Debian's packages), running (started if stopped), PostgreSQL answering the
# tests' login (user postgres, no password, on 127.0.0.1:5432) in UTF-8; and the tools some
# tests use: Debian's docker-compose, Prometheus, Chromium with its driver for the dashboard's
# browser tests, faketime, and wrk for `make bench`. Exits non-zero, saying why, when PostgreSQL
# or Redis is missing and cannot be installed here (not root, no apt-get); a missing tool only
# warns (the tests that need it skip, loudly, or fail under CI=true).
set -euo pipefail

say() { echo "ensure-services: $*" >&2; }

# Why packages cannot be installed here, or nothing.
why_not_installable() {
    if [ "$(id -u)" != 0 ]; then
        echo "not root"
    elif ! command -v apt-get >/dev/null; then
        echo "no apt-get"
    fi
}

apt_updated=false
apt_install() {
    if [ "$apt_updated" = false ]; then
        apt-get update -qq
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The services: without them `make test` cannot pass.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    reason="$(why_not_installable)"
    if [ -n "$reason" ]; then
        say "${missing[*]} missing and $reason here: install it (apt-get install ${missing[*]}) or run this as root on Debian."
        exit 1
    fi
    apt_install "${missing[@]}"
fi

# The tools: a missing one skips (or, under CI=true, fails) only the tests that use it.
tool() {
    local program=$1
    shift
    command -v "$program" >/dev/null && return 0
    local reason
    reason="$(why_not_installable)"
    if [ -n "$reason" ]; then
        say "$program missing and $reason here; install it (apt-get install $*)."
        return 0
    fi
    apt_install "$@"
}
tool docker-compose docker-compose
tool prometheus prometheus
tool chromedriver chromium chromium-driver
tool wrk wrk             # the query benchmark's load generator
tool faketime faketime   # a worker whose clock is off, in tests

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
if [ -z "$version" ]; then
    if [ -n "$(why_not_installable)" ]; then
        say "PostgreSQL has no cluster and this is not root: pg_createcluster --locale C.UTF-8 VERSION main"
        exit 1
    fi
    version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    pg_createcluster --locale C.UTF-8 "$version" main >/dev/null
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

tests_log_in() { psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1" >/dev/null 2>&1; }
# The tests log in as postgres without a password over TCP: trust on loopback (a test machine),
# added only where that login is refused.
hba="/etc/postgresql/$version/main/pg_hba.conf"
if ! tests_log_in && [ -w "$hba" ]; then
    sed -i "1i host all postgres 127.0.0.1/32 trust" "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 1
fi
if ! tests_log_in; then
    say "PostgreSQL $version refuses the tests' login (psql -h 127.0.0.1 -U postgres): see $hba."
    exit 1
fi

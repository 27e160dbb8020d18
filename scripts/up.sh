#!/usr/bin/env bash
# Runs the API and one worker in the foreground; Ctrl-C (SIGINT) or SIGTERM stops both.
# A job in progress stops at its next batch and goes back to the queue for the next start.
# A worker that dies is started again, as the compose stack's restart policy does.
# uvicorn and celery come from PATH (`make up` puts .venv/bin first).
set -uo pipefail
cd "$(dirname "$0")/.."
export CONVLAB_HOME="${CONVLAB_HOME:-$PWD/var}"
# The API and the worker share this machine's data directory: with it there, the API refuses
# an experiment on a dataset that is not in it (saying where to put it) instead of queueing it.
mkdir -p "${CONVLAB_DATA_DIR:-$CONVLAB_HOME/data}"
# Without an NVIDIA driver, TensorFlow's C++ errors are only its failed CUDA probe ("failed
# call to cuInit"): hidden, as training errors reach the run's error anyway. With a GPU they
# stay, a broken driver's included. A TF_CPP_MIN_LOG_LEVEL given is kept.
if [ ! -e /dev/nvidiactl ]; then
    export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
fi
host="${CONVLAB_HOST:-127.0.0.1}"
port="${CONVLAB_PORT:-8000}"

# How long a stopping worker may take before it is killed, as compose does after its grace
# period: a worker hung in its stop (seen in three full test runs; its cause is not found) must
# not hold `make up` forever; a killed worker's run goes back to the queue when its lease ends.
# Its stacks are printed first, to find where it hung.
grace="${CONVLAB_STOP_GRACE_S:-30}"

stop_worker() {
    local celery_pid=$1
    kill -TERM "$celery_pid" 2>/dev/null
    for ((waited = 0; waited < grace; waited++)); do
        kill -0 "$celery_pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$celery_pid" 2>/dev/null; then
        echo "convlab: the worker did not stop within $grace s; its threads' stacks follow," \
            "then it and its pool are killed." >&2
        # worker.stop.STACKS_SIGNAL: each process prints its stacks, one after another (two
        # processes writing at once interleave their lines)
        for pid in $(pgrep -P "$celery_pid") "$celery_pid"; do
            kill -URG "$pid" 2>/dev/null
            sleep 1
        done
        pkill -KILL -P "$celery_pid"
        kill -KILL "$celery_pid" 2>/dev/null
    fi
    wait "$celery_pid"
}

supervise_worker() {
    local celery_pid
    # Once: Ctrl-C reaches this shell and up.sh's own stop sends TERM after it.
    trap 'trap "" INT TERM; stop_worker "$celery_pid"; exit 0' INT TERM
    while true; do
        celery -A worker.celery_app worker --loglevel INFO &
        celery_pid=$!
        wait "$celery_pid"
        echo "convlab: the worker exited (status $?); starting it again in 2 s." >&2
        sleep 2
    done
}

# Whether another process holds the port (bound as uvicorn binds it, address reuse on).
port_taken() {
    ! python -c 'import socket, sys
with socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))' "$host" "$port" 2>/dev/null
}
say_port_taken() {
    echo "convlab: port $port on $host is taken by another program (another convlab?);" \
        "stop it, or choose another port: CONVLAB_PORT=$((port + 1)) make up" >&2
}
if port_taken; then
    say_port_taken
    exit 1
fi

# Where a client reaches the API: a wildcard address is this machine's loopback.
case "$host" in 0.0.0.0) reach=127.0.0.1 ;; ::) reach=::1 ;; *) reach=$host ;; esac
listening() { (exec 3<>"/dev/tcp/$reach/$port") 2>/dev/null; }

uvicorn --factory api.main:create_app --host "$host" --port "$port" \
    --workers "${CONVLAB_API_WORKERS:-1}" --timeout-graceful-shutdown 5 &
api=$!
supervise_worker &
worker=$!

stop() {
    trap - INT TERM
    kill -TERM "$api" "$worker" 2>/dev/null
    wait "$api" "$worker"
}
on_signal() {
    stop
    exit 0
}
trap on_signal INT TERM
# The banner once the API listens; an API that exits first is reported below.
until listening || ! kill -0 "$api" 2>/dev/null; do sleep 0.2; done
if kill -0 "$api" 2>/dev/null; then
    echo "convlab: API on http://$host:$port (docs at /docs), state in $CONVLAB_HOME; Ctrl-C stops."
fi
wait "$api"
status=$?
if port_taken; then  # another program bound it between the check and uvicorn's bind
    say_port_taken
else
    echo "convlab: the API exited (status $status); stopping the worker." >&2
fi
stop
exit "$status"

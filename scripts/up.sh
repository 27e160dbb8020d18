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
host="${CONVLAB_HOST:-127.0.0.1}"
port="${CONVLAB_PORT:-8000}"

# How long a stopping worker may take before it is killed, as compose does after its grace
# period: a worker hung in its stop (seen in two full test runs; its cause is not found) must not
# hold `make up` forever; a killed worker's run goes back to the queue when its lease ends.
grace="${CONVLAB_STOP_GRACE_S:-30}"

stop_worker() {
    local celery_pid=$1
    kill -TERM "$celery_pid" 2>/dev/null
    for ((waited = 0; waited < grace; waited++)); do
        kill -0 "$celery_pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$celery_pid" 2>/dev/null; then
        echo "convlab: the worker did not stop within $grace s; killing it and its pool." >&2
        pkill -KILL -P "$celery_pid"
        kill -KILL "$celery_pid" 2>/dev/null
    fi
    wait "$celery_pid"
}

supervise_worker() {
    local celery_pid
    trap 'stop_worker "$celery_pid"; exit 0' INT TERM
    while true; do
        celery -A worker.celery_app worker --loglevel INFO --concurrency 1 &
        celery_pid=$!
        wait "$celery_pid"
        echo "convlab: the worker exited (status $?); starting it again in 2 s." >&2
        sleep 2
    done
}

uvicorn --factory api.main:create_app --host "$host" --port "$port" \
    --workers "${CONVLAB_API_WORKERS:-1}" --timeout-graceful-shutdown 5 &
api=$!
supervise_worker &
worker=$!
echo "convlab: API on http://$host:$port (docs at /docs), state in $CONVLAB_HOME; Ctrl-C stops."

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
wait "$api"
status=$?
echo "convlab: the API exited (status $status); stopping the worker." >&2
stop
exit "$status"

#!/usr/bin/env bash
# Quick start: one Fast-Flow node with nothing but Docker. Installs what it
# needs (the Docker engine and the local worker image), builds Fast-Flow in
# release mode, starts the single node on http://127.0.0.1:8000 (SQLite,
# log files and the embedded runner under .fastflow/), runs the `hello`
# example and follows its log live to the end. Run again, it starts in seconds.
#
#   scripts/quickstart.sh          # set up, start, run hello
#   scripts/quickstart.sh stop     # stop the node (job containers still running are re-attached at the next start)
#
# FASTFLOW_HOME (default ./.fastflow) holds the node's data; BIND_ADDR changes the address.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOME_DIR="${FASTFLOW_HOME:-$ROOT/.fastflow}"
BIND="${BIND_ADDR:-127.0.0.1:8000}"
URL="http://$BIND"
PIDFILE="$HOME_DIR/control-plane.pid"
LOG="$HOME_DIR/control-plane.log"

step() { printf '\n==> %s\n' "$*"; }

stop_node() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    local pid; pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped the Fast-Flow node (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

case "${1:-up}" in
  stop) stop_node; exit 0 ;;
  up) ;;
  *) echo "usage: $0 [up|stop]" >&2; exit 2 ;;
esac

step "1/4 Docker engine and the worker image (the first time takes a few minutes)"
scripts/dev-deps.sh docker

step "2/4 building Fast-Flow in release mode (the first build takes several minutes)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fastflow-target}"
start=$(date +%s)
cargo build --locked --release -p control-plane --bin control-plane
echo "built in $(( $(date +%s) - start )) s"
BIN="$CARGO_TARGET_DIR/release/control-plane"

step "3/4 starting the single node on $URL"
mkdir -p "$HOME_DIR"
stop_node >/dev/null
# Only the single node's settings: variables of a distributed set-up in this shell would switch seams.
env -u DATABASE_URL -u NATS_URL -u S3_ENDPOINT -u S3_BUCKET \
  BIND_ADDR="$BIND" PIPELINES_DIR="$ROOT/pipelines" \
  DATA_DIR="$HOME_DIR/data" LOGS_DIR="$HOME_DIR/logs" NO_COLOR=1 \
  nohup "$BIN" >"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "$URL/health" 2>/dev/null && break
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "the node exited during start-up; its log:" >&2; tail -20 "$LOG" >&2; rm -f "$PIDFILE"; exit 1
  fi
  sleep 0.2
done
curl -fsS "$URL/health" || { echo; echo "the node does not answer /health; its log:" >&2; tail -20 "$LOG" >&2; exit 1; }
echo
grep -E ' INFO +(store|bus|log store): ' "$LOG" | sed -E 's/^.* INFO +/  /' || true
# The embedded runner registers with its first heartbeat.
for _ in $(seq 1 50); do
  curl -fsS "$URL/api/v1/runners" 2>/dev/null | grep -q '"id"' && break
  sleep 0.2
done

step "4/4 running the hello pipeline"
run=$(curl -fsS -X POST "$URL/api/v1/pipelines/hello/run" -H 'content-type: application/json' \
  -d '{"params":{"NAME":"Fast-Flow"}}')
id=$(printf '%s' "$run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "run $id queued; following its log:"
# Each SSE log line as it arrives; the final `end` event carries the run.
status=$(curl -fsSN "$URL/api/v1/runs/$id/logs/stream" | python3 -u scripts/lib/follow_run.py)

cat <<MSG

Fast-Flow is running (single node: SQLite, log files and the embedded runner in $HOME_DIR):
  API:        $URL  (try: curl $URL/api/v1/pipelines)
  run again:  curl -X POST $URL/api/v1/pipelines/hello/run
  its log:    $LOG
  stop:       ${FASTFLOW_HOME:+FASTFLOW_HOME=$FASTFLOW_HOME }scripts/quickstart.sh stop
MSG
[ "$status" = success ]

#!/usr/bin/env bash
# Distributed quick start (the README's first command is the single node: quickstart.sh):
# installs and starts what Fast-Flow needs (Docker engine, PostgreSQL,
# NATS JetStream, an S3 server, the worker images), builds Fast-Flow in release
# mode, starts a control plane on http://127.0.0.1:8000 and one runner, runs the
# `hello` example and follows its log live.
#
#   scripts/quickstart-distributed.sh          # set up, start, run hello
#   scripts/quickstart-distributed.sh stop     # stop the control plane and runner it started
#   scripts/quickstart-distributed.sh stop-all # ... and the services dev-deps.sh started
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE="${FASTFLOW_DEV_DIR:-/var/tmp/fastflow-dev}/quickstart-distributed"
BIND="${BIND_ADDR:-127.0.0.1:8000}"
URL="http://$BIND"

step() { printf '\n==> %s\n' "$*"; }

stop_processes() {
  for name in runner-agent control-plane; do
    pidfile="$STATE/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      kill "$(cat "$pidfile")" && echo "stopped $name (pid $(cat "$pidfile"))"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-up}" in
  stop) stop_processes; exit 0 ;;
  stop-all) stop_processes; scripts/dev-deps.sh down; exit 0 ;;
  up) ;;
  *) echo "usage: $0 [up|stop|stop-all]" >&2; exit 2 ;;
esac

step "dependencies: Docker engine, PostgreSQL, NATS JetStream, S3 server, images"
scripts/dev-deps.sh up
# shellcheck disable=SC1091
source "${FASTFLOW_DEV_DIR:-/var/tmp/fastflow-dev}/env.sh"

step "building Fast-Flow (release; the first build takes several minutes)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fastflow-target}"
cargo build --locked --release --bins -p control-plane -p runner-agent
BIN="$CARGO_TARGET_DIR/release"

mkdir -p "$STATE"
stop_processes >/dev/null

step "starting the control plane on $URL"
BIND_ADDR="$BIND" PIPELINES_DIR="$ROOT/pipelines" nohup "$BIN/control-plane" >"$STATE/control-plane.log" 2>&1 &
echo $! >"$STATE/control-plane.pid"
for _ in $(seq 1 60); do
  curl -fsS "$URL/health" >/dev/null 2>&1 && break
  if ! kill -0 "$(cat "$STATE/control-plane.pid")" 2>/dev/null; then
    echo "the control plane exited; its log:" >&2; tail -20 "$STATE/control-plane.log" >&2; exit 1
  fi
  sleep 0.5
done
curl -fsS "$URL/health"; echo

step "starting a runner"
RUNNER_ID=quickstart RUNNER_DATA_DIR="$STATE/runner" nohup "$BIN/runner-agent" >"$STATE/runner-agent.log" 2>&1 &
echo $! >"$STATE/runner-agent.pid"

step "running the hello pipeline"
run=$(curl -fsS -X POST "$URL/api/v1/pipelines/hello/run" -H 'content-type: application/json' \
  -d '{"params":{"NAME":"Fast-Flow"}}')
id=$(printf '%s' "$run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "run $id queued; following its log:"
# Print each SSE log line as it arrives; the final `end` event carries the run.
curl -fsSN "$URL/api/v1/runs/$id/logs/stream" | python3 -u scripts/lib/follow_run.py >/dev/null

cat <<MSG

Fast-Flow is running:
  API:        $URL  (try: curl $URL/api/v1/pipelines)
  run again:  curl -X POST $URL/api/v1/pipelines/hello/run
  logs:       $STATE/control-plane.log, $STATE/runner-agent.log
  stop:       scripts/quickstart-distributed.sh stop       (services too: scripts/quickstart-distributed.sh stop-all)
MSG

#!/usr/bin/env bash
# Quick start: one Fast-Flow node with nothing but Docker. Installs what it
# needs (the Docker engine and the local worker image), builds Fast-Flow in
# release mode, starts the single node on http://127.0.0.1:8000 (SQLite,
# log files and the embedded runner under .fastflow/), signs in as the first
# admin (the node creates `admin` with a random password in
# .fastflow/data/initial-admin-password), runs the `hello` example and follows
# its log live to the end. Run again, it starts in seconds.
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
DATA_DIR="$HOME_DIR/data"
PASSWORD_FILE="$DATA_DIR/initial-admin-password"
# The login session's cookie (readable by its owner only; removed at the end).
JAR="$HOME_DIR/session-cookies"

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
  DATA_DIR="$DATA_DIR" LOGS_DIR="$HOME_DIR/logs" NO_COLOR=1 \
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
# Nothing but /health answers without signing in. The node created the first admin
# (`admin`) with a random password in a file only its owner can read; the password
# itself is never printed.
echo "sign in as \`admin\`: POST $URL/api/v1/auth/login; the password: cat $PASSWORD_FILE"

how_to_run_again() {
  cat <<MSG
  run again:  an API token for scripts (printed once; the CLI works beside the running node):
                TOKEN=\$(env -u DATABASE_URL DATA_DIR=$DATA_DIR $BIN token create --user admin --name my-token)
                curl -X POST -H "Authorization: Bearer \$TOKEN" $URL/api/v1/pipelines/hello/run
MSG
}

step "4/4 running the hello pipeline (signed in as admin)"
if [ ! -f "$PASSWORD_FILE" ]; then
  echo "$PASSWORD_FILE is gone (deleted once the password was changed), so the quick start cannot sign in:"
  echo "skipping the hello run."
  how_to_run_again
  exit 0
fi
# Sign in like the dashboard: the session cookie into a private cookie jar, the CSRF token
# from the answer. The password goes to curl on stdin, never on a command line.
rm -f "$JAR"
login=$(python3 -c 'import json,sys; print(json.dumps({"username": "admin", "password": open(sys.argv[1]).read().rstrip("\n")}))' \
  "$PASSWORD_FILE" | (umask 077 && curl -sS -c "$JAR" -H 'content-type: application/json' --data-binary @- \
  -w '\n%{http_code}' "$URL/api/v1/auth/login"))
code=${login##*$'\n'}
if [ "$code" != 200 ]; then
  echo "signing in as admin failed (HTTP $code): ${login%$'\n'*}" >&2
  echo "(was the password changed? $PASSWORD_FILE holds the first one only)" >&2
  exit 1
fi
csrf=$(printf '%s' "${login%$'\n'*}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])')
logout() { curl -fsS -o /dev/null -b "$JAR" -c "$JAR" -X POST "$URL/api/v1/auth/logout" || true; rm -f "$JAR"; }
trap logout EXIT
# The embedded runner registers with its first heartbeat.
for _ in $(seq 1 50); do
  curl -fsS -b "$JAR" "$URL/api/v1/runners" 2>/dev/null | grep -q '"id"' && break
  sleep 0.2
done
run=$(curl -fsS -b "$JAR" -X POST "$URL/api/v1/pipelines/hello/run" -H "X-CSRF-Token: $csrf" \
  -H 'content-type: application/json' -d '{"params":{"NAME":"Fast-Flow"}}')
id=$(printf '%s' "$run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "run $id queued; following its log:"
# Each SSE log line as it arrives; the final `end` event carries the run.
status=$(curl -fsSN -b "$JAR" "$URL/api/v1/runs/$id/logs/stream" | python3 -u scripts/lib/follow_run.py)
logout
trap - EXIT

cat <<MSG

Fast-Flow is running (single node: SQLite, log files and the embedded runner in $HOME_DIR):
  API:        $URL  (only /health answers without signing in)
  sign in:    POST $URL/api/v1/auth/login as \`admin\`; the password: cat $PASSWORD_FILE
              (then change it: PUT $URL/api/v1/auth/password, and delete the file)
MSG
how_to_run_again
cat <<MSG
  its log:    $LOG
  stop:       ${FASTFLOW_HOME:+FASTFLOW_HOME=$FASTFLOW_HOME }scripts/quickstart.sh stop
MSG
[ "$status" = success ]

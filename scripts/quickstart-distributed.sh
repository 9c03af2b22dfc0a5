#!/usr/bin/env bash
# Distributed quick start (the README's first command is the single node: quickstart.sh):
# installs and starts what Fast-Flow needs (Docker engine, PostgreSQL,
# NATS JetStream, an S3 server, the worker images), builds Fast-Flow in release
# mode, creates the first admin (`admin`, a random password in a file only its owner
# can read) with the CLI, starts a control plane on http://127.0.0.1:8000 and one
# runner, runs the `hello` example with an API token and follows its log live.
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
PASSWORD_FILE="$STATE/admin-password"

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

step "the first admin (control-plane user create, on DATABASE_URL)"
# The CLI works on the store of DATABASE_URL (it migrates it), before the control plane's
# first start. The password is random, in a file only its owner can read; never printed.
new=0
if [ ! -s "$PASSWORD_FILE" ]; then
  (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$PASSWORD_FILE")
  new=1
fi
# Also when the file exists: the database may be new (then the same password is set again).
if err=$("$BIN/control-plane" user create admin --role admin --password-file "$PASSWORD_FILE" 2>&1); then
  echo "created \`admin\`; its password: cat $PASSWORD_FILE"
else
  case "$err" in
    *taken*)
      if [ "$new" = 1 ]; then
        rm -f "$PASSWORD_FILE"
        echo "\`admin\` exists already (its password file is gone): sign in with the password you set"
      else
        echo "\`admin\` exists; its password: cat $PASSWORD_FILE"
      fi ;;
    *) echo "cannot create the first admin: $err" >&2; exit 1 ;;
  esac
fi

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

step "enrolling and starting a runner"
# A token as scripts and CI use them: printed once by the CLI, sent as `Authorization: Bearer`.
# The header goes to curl in a config on stdin, so the token is on no command line.
TOKEN=$("$BIN/control-plane" token create --user admin --name "quickstart-$(date +%s)-$$" --expires-in 1h)
auth() { printf 'header = "Authorization: Bearer %s"\n' "$TOKEN"; }
# A runner proves who it is: an admin's registration token (single use, 10 minutes) is
# exchanged once for the runner's own credentials, kept in its data dir (mode 0600).
# The runner gets the NATS address without the control plane's password.
if [ ! -s "$STATE/runner/credentials.json" ]; then
  REGISTRATION_TOKEN=$(auth | curl -fsS -K - -X POST "$URL/api/v1/runners/registration-tokens" \
    -H 'content-type: application/json' -d '{"description":"quickstart","expires_in_seconds":600}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
fi
NATS_RUNNER_URL="nats://${NATS_URL##*@}"
env -u NATS_AUTH_CALLOUT_SEED -u DATABASE_URL NATS_URL="$NATS_RUNNER_URL" \
  RUNNER_REGISTRATION_TOKEN="${REGISTRATION_TOKEN:-}" RUNNER_ID=quickstart RUNNER_DATA_DIR="$STATE/runner" \
  nohup "$BIN/runner-agent" >"$STATE/runner-agent.log" 2>&1 &
echo $! >"$STATE/runner-agent.pid"
unset REGISTRATION_TOKEN

step "running the hello pipeline (with an API token of admin's, valid for an hour)"
run=$(auth | curl -fsS -K - -X POST "$URL/api/v1/pipelines/hello/run" -H 'content-type: application/json' \
  -d '{"params":{"NAME":"Fast-Flow"}}')
id=$(printf '%s' "$run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "run $id queued; following its log:"
# Print each SSE log line as it arrives; the final `end` event carries the run.
auth | curl -fsSN -K - "$URL/api/v1/runs/$id/logs/stream" | python3 -u scripts/lib/follow_run.py >/dev/null
unset TOKEN

cat <<MSG

Fast-Flow is running:
  API:        $URL  (only /health answers without credentials)
  sign in:    POST $URL/api/v1/auth/login as \`admin\`; the password: cat $PASSWORD_FILE
  run again:  an API token (printed once; the CLI needs the same DATABASE_URL):
                source ${FASTFLOW_DEV_DIR:-/var/tmp/fastflow-dev}/env.sh
                TOKEN=\$($BIN/control-plane token create --user admin --name my-token)
                curl -X POST -H "Authorization: Bearer \$TOKEN" $URL/api/v1/pipelines/hello/run
  logs:       $STATE/control-plane.log, $STATE/runner-agent.log
  stop:       scripts/quickstart-distributed.sh stop       (services too: scripts/quickstart-distributed.sh stop-all)
MSG

#!/usr/bin/env bash
# Checks the README's first command the way a new user meets it: runs
# scripts/quickstart.sh from a state where the worker image does not exist,
# with a fresh FASTFLOW_HOME on a private port, and checks that `hello` ran
# with its live output shown and succeeded, signed in as the first admin whose
# password file it named (and never printed); then stops the node.
set -euo pipefail
cd "$(dirname "$0")/.."
home=$(mktemp -d /var/tmp/fastflow-quickstart-test.XXXXXX)
port=${FASTFLOW_QUICKSTART_TEST_PORT:-18765}
image=${WORKER_BASE_IMAGE:-fastflow-worker:latest}
out="$home/quickstart.out"
cleanup() { FASTFLOW_HOME="$home" scripts/quickstart.sh stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

fail() { echo "quickstart check FAILED: $*" >&2; tail -30 "$home/control-plane.log" >&2 2>/dev/null || true; exit 1; }

if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
  echo "removing $image so the quick start has to build it"
  docker image rm -f "$image" >/dev/null 2>&1 || true
fi
status=0
FASTFLOW_HOME="$home" BIND_ADDR="127.0.0.1:$port" scripts/quickstart.sh 2>&1 | tee "$out" || status=$?
[ "$status" -eq 0 ] || fail "scripts/quickstart.sh exited with $status"
grep -q "image: $image built" "$out" || fail "the worker image was not built by the quick start"
for n in 1 2 3 4; do grep -q "==> $n/4 " "$out" || fail "step $n/4 was not announced"; done
grep -q '  | Hello, Fast-Flow!' "$out" || fail "hello's output was not shown live"
grep -q 'run finished: status=success' "$out" || fail "hello did not succeed"
grep -q "store: sqlite" "$home/control-plane.log" || fail "the node did not use SQLite"
grep -q "log store: files in" "$home/control-plane.log" || fail "the node did not keep logs as files"
grep -q "bus: in-process" "$home/control-plane.log" || fail "the node did not use the in-process bus"
# Authentication: the first admin's password is in a private file, named but never shown.
pwfile="$home/data/initial-admin-password"
[ -f "$pwfile" ] || fail "the node did not write $pwfile"
[ "$(stat -c %a "$pwfile")" = 600 ] || fail "$pwfile is not mode 600 ($(stat -c %a "$pwfile"))"
grep -qF "cat $pwfile" "$out" || fail "the quick start did not say how to read $pwfile"
password=$(head -n 1 "$pwfile")
[ "${#password}" -ge 12 ] || fail "the initial admin password is shorter than 12 characters"
if grep -qF -- "$password" "$out" "$home/control-plane.log"; then fail "the admin password was printed or logged"; fi
grep -qF 'Authorization: Bearer' "$out" || fail "the final message does not show how to call the API with a token"
[ ! -e "$home/session-cookies" ] || fail "the session cookie jar was left behind"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/v1/runs")
[ "$code" = 401 ] || fail "GET /api/v1/runs without credentials answered $code, not 401"
cleanup
trap - EXIT
rm -rf "$home"
echo "quickstart check passed"

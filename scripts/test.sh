#!/usr/bin/env bash
# The whole test suite: brings up Postgres, NATS JetStream, the S3 server and the
# Docker engine (scripts/dev-deps.sh), builds everything, runs unit, integration
# and end-to-end tests against those real services. Exits non-zero on any failure.
#
#   scripts/test.sh                 # everything, then the quick start itself (scripts/test-quickstart.sh)
#   scripts/test.sh -p tests hello  # extra arguments go to `cargo test` (no quick-start check)
#
# FASTFLOW_SKIP_QUICKSTART_TEST=1 skips the quick-start check (it needs a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "dependencies (scripts/dev-deps.sh up)"
scripts/dev-deps.sh up
# shellcheck disable=SC1091
source "${FASTFLOW_DEV_DIR:-/var/tmp/fastflow-dev}/env.sh"

# A target directory outside the clone, so repeated runs (and CI) reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fastflow-target}"
export FASTFLOW_BIN_DIR="$CARGO_TARGET_DIR/debug"
# Two cores: more parallel end-to-end tests only make each of them slower.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}"

step "build (target dir: $CARGO_TARGET_DIR)"
start=$(date +%s)
cargo build --locked --workspace --bins --tests
echo "built in $(( $(date +%s) - start )) s"

step "tests"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
if [ "$#" -gt 0 ]; then
  cargo test --locked "$@" 2>&1 | tee "$out" || status=$?
else
  # No doctests: the crates have none, and empty doctest runs would end the output.
  cargo test --locked --no-fail-fast --workspace --lib --bins --tests 2>&1 | tee "$out" || status=$?
fi
# The README's first command, as a new user runs it (counted as one more test).
quickstart=""
if [ "$#" -eq 0 ] && [ "${FASTFLOW_SKIP_QUICKSTART_TEST:-0}" != 1 ]; then
  step "quick start (scripts/test-quickstart.sh)"
  if scripts/test-quickstart.sh; then quickstart=passed; else quickstart=failed; status=1; fi
fi
# One closing line over every test binary.
awk -v q="$quickstart" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { if (q == "passed") p++; if (q == "failed") f++; printf "\n%d passed, %d failed\n", p, f }' "$out"
exit "$status"

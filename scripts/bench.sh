#!/usr/bin/env bash
# Fast-Flow's benchmark (issue 5; BENCHMARKS.md explains every figure).
#
#   scripts/bench.sh            # full run (about 20–30 minutes on a 2-core machine)
#   scripts/bench.sh --quick    # smoke run for CI (well under a minute once built)
#   scripts/bench.sh --only latency,throughput
#
# Brings up the dev services (scripts/dev-deps.sh), builds the release binaries, runs
# `bench`, which starts its own nats-server, Postgres database and S3 bucket, prints a
# Markdown table and writes JSON to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "dependencies (scripts/dev-deps.sh up)"
scripts/dev-deps.sh up >&2
# shellcheck disable=SC1091
source "${FASTFLOW_DEV_DIR:-/var/tmp/fastflow-dev}/env.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fastflow-target}"
step "build release (target dir: $CARGO_TARGET_DIR)"
cargo build --locked --release -p control-plane -p runner-agent -p bench >&2
export FASTFLOW_BIN_DIR="$CARGO_TARGET_DIR/release"

step "bench $*"
exec "$FASTFLOW_BIN_DIR/bench" "$@"

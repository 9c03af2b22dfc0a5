#!/usr/bin/env bash
# Fast-Flow's benchmark (issue 5; BENCHMARKS.md explains every figure).
#
#   scripts/bench.sh            # full run, both configurations, 3 repetitions (about an hour on a 2-core machine; BENCHMARKS.md has the estimate)
#   scripts/bench.sh --quick    # smoke run for CI, 1 repetition (about 1.5 minutes once built; add --reps N to repeat)
#   scripts/bench.sh --only latency,throughput --configs single-node
#
# Brings up the dev services (scripts/dev-deps.sh), builds the release binaries, runs
# `bench`, which starts a private distributed deployment (its own nats-server, Postgres
# database and S3 bucket) and then a private single node (SQLite, log files, embedded
# runner), prints a Markdown table and writes JSON to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "dependencies (scripts/dev-deps.sh up)"
scripts/dev-deps.sh up >&2
# shellcheck disable=SC1091
source "${FASTFLOW_DEV_DIR:-/var/tmp/fastflow-dev}/env.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fastflow-target}"
step "build release (target dir: $CARGO_TARGET_DIR)"
# `bench-noop`: the dispatch scenario's no-op executor (RUNNER_BENCH_NOOP_EXECUTOR), which
# builds without the feature (tests, quick start, releases) refuse.
cargo build --locked --release -p control-plane -p runner-agent -p bench \
  --features runner-agent/bench-noop,control-plane/bench-noop >&2
# A private copy of the binaries: the target dir may be shared with other checkouts whose
# builds would otherwise replace them during a run of an hour.
FASTFLOW_BIN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fastflow-bench-bin.XXXXXX")"
export FASTFLOW_BIN_DIR
trap 'rm -rf "$FASTFLOW_BIN_DIR"' EXIT
cp "$CARGO_TARGET_DIR"/release/{control-plane,runner-agent,bench} "$FASTFLOW_BIN_DIR/"

step "bench $*"
"$FASTFLOW_BIN_DIR/bench" "$@"

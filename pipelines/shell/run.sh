#!/bin/sh
# Runs inside fastflow-busybox: prints its greeting and a few numbered lines.
echo "$GREETING"
for i in 1 2 3; do
  echo "line $i"
done
echo "to stderr" >&2

"""Follows a run's SSE log stream (read from stdin): prints each log line as it
arrives, then the final status from the `end` event. Used by the quick starts.

Log lines and the summary go to stderr; the run's final status alone goes to
stdout, so a script can capture it: status=$(curl … | python3 follow_run.py)."""
import json
import sys

event = None
for raw in sys.stdin:
    line = raw.rstrip("\n")
    if line.startswith("event: "):
        event = line[7:]
    elif line.startswith("data: ") and event == "log":
        print("  | " + json.loads(line[6:])["line"], file=sys.stderr, flush=True)
    elif line.startswith("data: ") and event == "attempt":
        print("  -- attempt %s" % json.loads(line[6:])["attempt"], file=sys.stderr, flush=True)
    elif line.startswith("data: ") and event == "end":
        run = json.loads(line[6:])
        print("run finished: status=%s exit_code=%s" % (run["status"], run["exit_code"]), file=sys.stderr)
        print(run["status"])
        break

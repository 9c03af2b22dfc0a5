"""A pipeline that fails on purpose with exit code 3 (optionally saying why)."""
import os
import sys

reason = os.environ.get("REASON", "no reason given")
print(f"about to fail: {reason}")
print("exiting with code 3", file=sys.stderr)
sys.exit(3)

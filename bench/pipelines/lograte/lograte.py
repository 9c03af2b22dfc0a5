import os
import sys
import time

rate = float(os.environ.get("RATE", "10"))
duration = float(os.environ.get("DURATION", "1"))
delay = float(os.environ.get("START_DELAY", "0.5"))
count = int(rate * duration)

# Give the SSE client time to subscribe, so the first lines are live, not replayed.
time.sleep(delay)
out = sys.stdout
start = time.monotonic()
for seq in range(count):
    ahead = start + seq / rate - time.monotonic()
    if ahead > 0.0005:
        time.sleep(ahead)
    out.write(f"{time.time_ns()} {seq}\n")
    out.flush()

"""A long pipeline: prints one line a second for a minute (for live logs and cancel)."""
import time

for i in range(1, 61):
    print(f"tick {i}/60", flush=True)
    time.sleep(1)
print("done")

"""Burn CPU for argv[1] seconds of wall time; print CPU seconds used and wall seconds."""

from __future__ import annotations

import sys
import time

wall = float(sys.argv[1])
start = time.monotonic()
cpu_start = time.process_time()
spins = 0
while time.monotonic() - start < wall:
    spins += 1
print(f"{time.process_time() - cpu_start:.3f} {time.monotonic() - start:.3f}", flush=True)

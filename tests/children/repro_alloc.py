"""Allocate and touch N MiB at start (argv[1]), say so, then exit 0."""

from __future__ import annotations

import sys

size = int(sys.argv[1]) * 1024 * 1024
block = bytearray(size)
for offset in range(0, size, 4096):
    block[offset] = 1
print(f"allocated {sys.argv[1]} MiB", flush=True)

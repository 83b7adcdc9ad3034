"""Allocate memory in steps until killed (or until --max-mb, then hold).

Prints one line per step ("allocated N MiB") on stdout, flushed, so a test can
follow its progress. Pages are written, not just reserved, so they count.
"""

from __future__ import annotations

import argparse
import sys
import time

MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-mb", type=float, default=8.0)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--max-mb", type=float, default=None)
    args = parser.parse_args()
    held: list[bytes] = []
    total = 0
    step = int(args.step_mb * MIB)
    while args.max_mb is None or total + step <= args.max_mb * MIB:
        # Filled with a non-zero byte: zeroed memory could stay unbacked.
        held.append(b"\x01" * step)
        total += step
        print(f"allocated {total // MIB} MiB", flush=True)
        time.sleep(args.interval)
    print("holding", flush=True)
    # Hold until the test closes stdin or kills us.
    sys.stdin.read()


if __name__ == "__main__":
    main()

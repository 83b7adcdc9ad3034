"""Allocate --mb MiB, write every page, free it at once and exit 0."""

from __future__ import annotations

import argparse

MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=300)
    args = parser.parse_args()
    block = b"\x01" * (args.mb * MIB)
    del block
    print("freed", flush=True)


if __name__ == "__main__":
    main()

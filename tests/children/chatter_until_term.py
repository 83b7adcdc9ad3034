"""Write to stderr without end; on SIGTERM note it in argv[1] and exit 0."""

import os
import signal
import sys
import time

path = sys.argv[1]


def on_term(signum: int, frame: object) -> None:
    with open(path, "w") as note:
        note.write(f"{time.monotonic()}\n")
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
line = b"chatter " * 16 + b"\n"
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    os.write(2, line)

"""Write the bytes of a deterministic stream to stderr, then wait for SIGTERM.

argv: total bytes of short lines, then bytes of one line with no newline.
The stream mixes invalid UTF-8 into it. Prints its sha256 to stdout at the end.
"""

import hashlib
import os
import signal
import sys
import time

short_total = int(sys.argv[1])
long_line = int(sys.argv[2])
digest = hashlib.sha256()


def emit(data: bytes) -> None:
    digest.update(data)
    view = memoryview(data)
    while view:
        written = os.write(2, view)
        view = view[written:]


line = b"0123456789 abc \xff\xfe invalid utf-8 \xc3\x28 and more text to make 100 bytes!!!!\n"
line = line[:99] + b"\n"
written = 0
while written + len(line) <= short_total:
    emit(line)
    written += len(line)
if written < short_total:
    emit(line[: short_total - written])
    written = short_total
chunk = (b"x" * 1000 + b"\x80\x81") * 512
remaining = long_line
while remaining > 0:
    piece = chunk[:remaining]
    emit(piece)
    remaining -= len(piece)
print(digest.hexdigest(), written + long_line, flush=True)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    signal.pause()

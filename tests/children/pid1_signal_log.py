"""Note every catchable signal received, by name, one per line in the file argv[1].

Prints 'ready' once its handlers are installed, and 'got NAME' on stderr
for each; exits 0 on SIGTERM, after noting it. Job-control signals are
noted too, so they do not stop it.
"""

import os
import signal
import sys
import time

path = sys.argv[1]


def name_of(signum: int) -> str:
    if signal.SIGRTMIN < signum < signal.SIGRTMAX:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
    return signal.Signals(signum).name


def note(signum: int, frame: object) -> None:
    with open(path, "a") as log:
        log.write(name_of(signum) + "\n")
    print(f"got {name_of(signum)}", file=sys.stderr, flush=True)
    if signum == signal.SIGTERM:
        sys.exit(0)


for number in signal.valid_signals():
    if number in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        continue
    signal.signal(number, note)
print("ready", flush=True)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    signal.pause()
os._exit(9)

"""Write the name of every forwarded signal received to the file argv[1].

Exits 0 on SIGTERM (a clean stop), after noting it. Prints 'ready' to stdout
once its handlers are installed.
"""

import os
import signal
import sys
import time

path = sys.argv[1]
NAMES = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTERM"]


def note(signum: int, frame: object) -> None:
    with open(path, "a") as log:
        log.write(signal.Signals(signum).name + "\n")
    if signum == signal.SIGTERM:
        sys.exit(0)


for name in NAMES:
    signal.signal(getattr(signal, name), note)
print("ready", flush=True)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    signal.pause() if hasattr(signal, "pause") else time.sleep(0.1)
os._exit(9)

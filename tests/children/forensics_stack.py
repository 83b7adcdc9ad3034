"""A child whose main thread waits in a known function while a helper thread idles.

argv: [seconds]. Prints "ready" on stdout once both threads run.
"""

import sys
import threading
import time


def helper_loop() -> None:
    while True:
        time.sleep(0.05)


def wait_in_known_function(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


threading.Thread(target=helper_loop, name="helper", daemon=True).start()
print("ready", flush=True)
wait_in_known_function(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)

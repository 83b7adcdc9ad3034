"""Leave COUNT orphaned grandchildren behind, then wait for SIGTERM.

An intermediate process forks the grandchildren and exits at once, so they
are re-parented to the nearest subreaper (the supervisor) and, once they
exit, are zombies until it reaps them. Prints 'orphaned' when done.
"""

import os
import signal
import sys
import time

count = int(sys.argv[1])
intermediate = os.fork()
if intermediate == 0:
    for _ in range(count):
        if os.fork() == 0:
            # Outlive the intermediate so that the kernel re-parents us.
            time.sleep(0.2)
            os._exit(0)
    os._exit(0)
os.waitpid(intermediate, 0)
print("orphaned", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    signal.pause()

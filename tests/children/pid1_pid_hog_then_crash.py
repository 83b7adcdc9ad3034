"""Leaves a grandchild holding every pid its cgroup has left, then dies of an exception.

The grandchild (in the same pids cgroup) starts threads until the limit refuses
one and keeps them, so that when this process has died its supervisor cannot
start a thread either (for Sentry). It writes "full" on the pipe once it holds
them all; this process then raises.
"""

import os
import threading
import time

read_end, write_end = os.pipe()
if os.fork() == 0:
    os.close(read_end)
    os.setsid()  # out of the app's process group: it outlives the app
    held = threading.Event()
    kept = []
    reported = False
    while True:
        while True:
            thread = threading.Thread(target=held.wait, daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't start new thread": the limit
                break
            kept.append(thread)
        if not reported:
            os.write(write_end, b"full")
            os.close(write_end)
            reported = True
        time.sleep(0.005)  # take any pid that comes free (the app's own, when it ends)

os.close(write_end)
os.read(read_end, 4)
raise RuntimeError("the app failed while the pids were taken")

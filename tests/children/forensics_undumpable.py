"""A hardened app: it makes itself non-dumpable (as ssh-agent does), so that only a
process with CAP_SYS_PTRACE may read its memory. Then it starts slowly and exits.

argv: [seconds before exit, exit code].
"""

import ctypes
import sys
import time

PR_SET_DUMPABLE = 4
ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
print("undumpable", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 3)

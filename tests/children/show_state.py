"""Write the child's view of its start to argv[1] as JSON: env, signal state, group."""

import json
import os
import sys

status = {}
with open("/proc/self/status") as proc_status:
    for row in proc_status:
        key, _, value = row.partition(":")
        status[key] = value.strip()
with open("/proc/self/oom_score_adj") as adj:
    oom_score_adj = int(adj.read())
state = {
    "env": dict(os.environ),
    "sig_blocked": status.get("SigBlk"),
    "sig_ignored": status.get("SigIgn"),
    "pgid": os.getpgid(0),
    "pid": os.getpid(),
    "oom_score_adj": oom_score_adj,
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
}
with open(sys.argv[1], "w") as out:
    json.dump(state, out)

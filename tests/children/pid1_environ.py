"""Write the environment this process was started with to argv[1] as JSON.

From /proc/self/environ, not os.environ: this interpreter's own locale
coercion must not be taken for something it inherited.
"""

import json
import sys

with open("/proc/self/environ", "rb") as started_with:
    entries = [entry for entry in started_with.read().split(b"\0") if entry]
environ = dict(entry.decode("utf-8", "replace").partition("=")[::2] for entry in entries)
with open(sys.argv[1], "w") as out:
    json.dump(environ, out)

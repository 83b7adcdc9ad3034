"""Report the network this process sees, as JSON; with argv[1:] = host port, try to connect.

The interface list comes from the kernel for this process's own namespace
(if_nameindex, /proc/self/net/dev): /sys/class/net shows the namespace that
mounted sysfs, not this one.
"""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import sys

IFREQ = struct.Struct("16sh22x")
SIOCGIFFLAGS = 0x8913


def lo_is_up() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = bytearray(IFREQ.pack(b"lo", 0))
        fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
        return bool(IFREQ.unpack(bytes(request))[1] & 1)


def loopback_works() -> bool:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            return True


with open("/proc/self/net/dev") as f:
    dev = [line.split(":")[0].strip() for line in f.readlines()[2:]]
report: dict[str, object] = {
    "interfaces": sorted(name for _, name in socket.if_nameindex()),
    "proc_net_dev": sorted(dev),
    "lo_up": lo_is_up(),
    "loopback_works": loopback_works(),
}
if len(sys.argv) == 3:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2):
            report["connect"] = "connected"
    except OSError as exc:
        report["connect"] = type(exc).__name__
print(json.dumps(report), flush=True)

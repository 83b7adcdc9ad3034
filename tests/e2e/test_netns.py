"""No network for the child: a real network namespace with only loopback up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Optional

import pytest

from supervisor.errors import UsageError
from supervisor.netns import check_can_unshare_network, enter_new_network_namespace
from tests.conftest import child
from tests.reproduce_support import processes, run_as_nobody

__all__ = ["processes"]  # a fixture, used by name

PYTHON = sys.executable


try:
    check_can_unshare_network()
    NETNS_SKIP: Optional[str] = None
except UsageError as exc:
    NETNS_SKIP = str(exc)
needs_netns = pytest.mark.skipif(NETNS_SKIP is not None, reason=str(NETNS_SKIP))


def netns_report(*args: str) -> dict[str, object]:
    result = subprocess.run([PYTHON, child("repro_netns.py"), *args],
                            preexec_fn=enter_new_network_namespace, capture_output=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@needs_netns
def test_a_child_in_a_new_network_namespace_sees_only_lo_and_it_is_up() -> None:
    report = netns_report()
    assert report["interfaces"] == ["lo"]
    assert report["proc_net_dev"] == ["lo"]
    assert report["lo_up"] is True
    assert report["loopback_works"] is True


@needs_netns
def test_a_server_outside_the_namespace_is_unreachable_from_inside() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # reachable from here
        report = netns_report("127.0.0.1", str(port))
    assert report["connect"] == "ConnectionRefusedError"


@needs_netns
def test_a_listener_bound_outside_keeps_serving_from_inside(
    processes: list[subprocess.Popen[bytes]]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        fd = listener.fileno()
        process = subprocess.Popen([PYTHON, child("repro_accept.py"), str(fd)], pass_fds=[fd],
                                   preexec_fn=enter_new_network_namespace)
        processes.append(process)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=10) as client:
            client.settimeout(10)
            greeting = b""
            deadline = time.monotonic() + 10
            while not greeting.endswith(b"\n") and time.monotonic() < deadline:
                chunk = client.recv(100)
                if not chunk:
                    break
                greeting += chunk
    assert greeting == b"hello from the namespace\n"
    assert process.wait(10) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")
def test_without_privilege_no_network_is_refused_with_one_line() -> None:
    message = run_as_nobody(check_can_unshare_network)
    assert message.startswith("--no-network: cannot give the child a network namespace")
    assert "Operation not permitted" in message
    assert "\n" not in message

"""A bounded stub, end to end: the real supervisor over an app that takes long to import.

While the app imports, anonymous clients can reach only the stub. Two attacks
on it, each run against the real supervisor on 127.0.0.1:
- many large early requests: the bytes held for the app are capped, the
  supervisor's memory stays bounded, and the requests past the cap get 503
  with Retry-After at once;
- slowloris: thousands of incomplete request heads, reopened as the stub
  drops them, and a fresh ``GET /healthz`` beside them is still answered.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from tests.conftest import PYTHON, Run, free_port, wait_for

CHILDREN = str(Path(__file__).resolve().parent.parent / "children")
_UVICORN_SCRIPT = Path(PYTHON).parent / "uvicorn"
UVICORN = [str(_UVICORN_SCRIPT)] if _UVICORN_SCRIPT.exists() else [PYTHON, "-m", "uvicorn"]
HOST = "127.0.0.1"
# Long enough that the stub answers alone for the whole test.
IMPORT_S = "120"

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="reads the supervisor's memory from /proc")

Supervise = Callable[..., Run]


def start_slow_app(supervise: Supervise) -> tuple[Run, int]:
    port = free_port()
    run = supervise("--", *UVICORN, "e2e_slow_import:app", "--app-dir", CHILDREN,
                    "--host", HOST, "--port", str(port), "--no-access-log",
                    env={"E2E_IMPORT_S": IMPORT_S})
    wait_for(lambda: healthz(port, timeout=2.0) == 200, timeout=15,
             what="the stub's first answer")
    return run, port


def healthz(port: int, timeout: float) -> Optional[int]:
    """The status of one ``GET /healthz`` on a fresh connection, or None."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    return int(data.split(b" ", 2)[1])


def settled_rss_kib(pid: int) -> int:
    """VmRSS once the supervisor has stopped growing by itself (it loads its watchers
    in its first seconds), so that what the test adds is measured alone."""
    samples: list[int] = []

    def steady() -> bool:
        samples.append(memory_kib(pid, "VmRSS"))
        recent = samples[-8:]
        return len(recent) == 8 and max(recent) - min(recent) < 512

    wait_for(steady, timeout=30, interval=0.25, what="the supervisor's memory to settle")
    return samples[-1]


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (the peak) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture
def many_files() -> Iterator[None]:
    """Room for a few thousand client sockets in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if wanted < 4096:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for the attack")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- 1. large early requests ------------------------------------------------------------
CLIENTS = 96
BODY = 1024 * 1024
STEP = 64 * 1024
# The cap on held bytes (8 MiB) over a 1 MiB request: at most this many are held.
HELD_AT_MOST = 8


class Uploader:
    """One client sending ``POST /upload`` with a 1 MiB body, reading as it sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.connect_ex((HOST, port))
        self.pending = (b"POST /upload HTTP/1.1\r\nHost: t\r\n"
                        b"Content-Length: %d\r\n\r\n" % BODY) + b"x" * BODY
        self.answer = b""
        self.reset = False

    @property
    def answered(self) -> bool:
        return b"\r\n\r\n" in self.answer

    def send_some(self) -> None:
        try:
            sent = self.sock.send(self.pending[:STEP])
        except BlockingIOError:
            return
        except OSError:
            self.reset = True
            return
        self.pending = self.pending[sent:]

    def read_some(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self.reset = True
            return
        self.answer += chunk
        if not chunk:
            self.reset = self.reset or not self.answered


def test_held_bytes_are_capped_and_requests_past_the_cap_get_503(
    supervise: Supervise,
) -> None:
    run, port = start_slow_app(supervise)
    rss_before = settled_rss_kib(run.pid)
    uploaders = [Uploader(port) for _ in range(CLIENTS)]
    selector = selectors.DefaultSelector()
    for index, uploader in enumerate(uploaders):
        selector.register(uploader.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, index)
    peak_rss = rss_before

    def settled() -> bool:
        # Pump every client once: read first, so that an answer is seen before
        # more of the body is sent into a connection the stub is closing.
        nonlocal peak_rss
        for key, events in selector.select(0.05):
            uploader = uploaders[key.data]
            if events & selectors.EVENT_READ:
                uploader.read_some()
            if uploader.answered or uploader.reset:
                selector.unregister(uploader.sock)
            elif events & selectors.EVENT_WRITE and uploader.pending:
                uploader.send_some()
        peak_rss = max(peak_rss, memory_kib(run.pid, "VmRSS"))
        done = sum(1 for u in uploaders if u.answered or u.reset)
        return done >= CLIENTS - HELD_AT_MOST

    try:
        # Before the cap, every request was held (up to 128): nothing answered.
        with contextlib.suppress(AssertionError):
            wait_for(settled, timeout=30, interval=0, what="answers to the requests past the cap")
        # Let the held ones fill their share, then look at the memory again.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            settled()
        answered = [u for u in uploaders if u.answered]
        resets = [u for u in uploaders if u.reset]
        waiting = [u for u in uploaders if not u.answered and not u.reset]
        peak_rss = max(peak_rss, memory_kib(run.pid, "VmRSS"))
        grown_mib = (peak_rss - rss_before) / 1024
        print(f"\n{len(answered)} answered, {len(resets)} reset, {len(waiting)} held; "
              f"supervisor RSS {rss_before / 1024:.1f} MiB, at most +{grown_mib:.1f} MiB")
        assert len(waiting) <= HELD_AT_MOST
        assert not resets, "a client past the cap was reset instead of answered"
        for uploader in answered:
            head = uploader.answer.split(b"\r\n\r\n", 1)[0]
            assert head.startswith(b"HTTP/1.1 503 "), head
            assert b"\r\nRetry-After: 1" in head, head
        # 8 MiB held, plus the buffers of the connections being refused, plus
        # the allocator's slack. Without the cap it grew by about a MiB a client.
        assert grown_mib < 32, f"the supervisor grew by {grown_mib:.1f} MiB"
        assert healthz(port, timeout=5) == 200
    finally:
        selector.close()
        for uploader in uploaders:
            uploader.sock.close()


# -- 2. slowloris -----------------------------------------------------------------------
POOL = 1024  # incomplete heads kept open at once: twice the stub's 512 connections
MAX_OPENED = 30_000  # the attack is bounded however fast the stub drops connections
PROBES = 5


class Slowloris:
    """Keeps ``POOL`` connections open with an incomplete head each, reopening dropped ones."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened = 0
        self.dropped = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.selector = selectors.DefaultSelector()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex((HOST, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return
        self.opened += 1
        self.selector.register(sock, selectors.EVENT_WRITE)

    def _run(self) -> None:
        try:
            for _ in range(POOL):
                self._open()
            while not self.stop.is_set():
                for key, events in self.selector.select(0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if events & selectors.EVENT_WRITE:
                        # Connected: a head that never ends.
                        with contextlib.suppress(OSError):
                            sock.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: a")
                        self.selector.modify(sock, selectors.EVENT_READ)
                        continue
                    # Readable: the stub answered (408) or dropped it: open another.
                    self.selector.unregister(sock)
                    sock.close()
                    self.dropped += 1
                    if self.opened < MAX_OPENED:
                        self._open()
        except BaseException as error:  # surfaced by the test
            self.errors.append(error)
        finally:
            for key in list(self.selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self.selector.close()


def test_healthz_is_answered_beside_thousands_of_incomplete_heads(
    supervise: Supervise, many_files: None
) -> None:
    run, port = start_slow_app(supervise)
    attack = Slowloris(port)
    attack.thread.start()
    try:
        # The stub full (512 connections) and the attack reopening what it drops.
        wait_for(lambda: attack.dropped >= POOL // 2
                 and len(os.listdir(f"/proc/{run.pid}/fd")) >= 512,
                 timeout=30, what="the attack to fill the stub")
        waits = []
        for _ in range(PROBES):
            started = time.monotonic()
            status = healthz(port, timeout=5)
            waits.append(time.monotonic() - started)
            assert status == 200, f"/healthz got {status} beside the attack"
        print(f"\n{attack.opened} incomplete heads opened, {attack.dropped} dropped by the stub; "
              f"/healthz answered in {', '.join(f'{w * 1000:.0f}' for w in waits)} ms; "
              f"supervisor RSS {memory_kib(run.pid, 'VmRSS') / 1024:.1f} MiB, "
              f"peak {memory_kib(run.pid, 'VmHWM') / 1024:.1f} MiB")
        # The requirement, a behaviour and not a speed: a platform's health
        # check (App Runner's timeout is 2 s) must still pass while the stub is
        # under attack. Before the fix the answer waited ~10 s for an idle timeout.
        assert max(waits) < 1.0, waits
    finally:
        attack.stop.set()
        attack.thread.join(10)
    assert not attack.errors, attack.errors

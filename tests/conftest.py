"""Fixtures that run the real supervisor over real child processes.

Every process a test starts is killed at teardown, with its whole tree:
the supervisor runs in its own session and its children in their own groups.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHILDREN = Path(__file__).resolve().parent / "children"
PYTHON = sys.executable


# "Eventually" on a loaded machine: deadlines are generous, since tests check
# behaviour, never speed (bench/ measures speed).
EVENTUALLY_S = 30.0


class VirtualClock:
    """A monotonic clock that moves only when told to: a ``Reactor``'s ``clock`` and
    ``advance``, so that an idle wait jumps straight to the next timer."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.jumped = 0.0  # how much virtual time passed without anyone waiting

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds
        self.jumped += seconds


def wait_for(predicate: Callable[[], object], timeout: float = EVENTUALLY_S,
             interval: float = 0.01, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline.

    The one polling helper of the suite; returns the truthy value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_for_wait_status(argv: Sequence[str], timeout: float = 60.0,
                        env: Optional[dict[str, str]] = None) -> tuple[int, str]:
    """Run ``argv`` to its end: its real wait status (as ``waitpid`` gives it) and stderr."""
    import tempfile

    with tempfile.TemporaryFile() as stderr:
        pid = os.posix_spawn(
            argv[0], list(argv), dict(os.environ if env is None else env),
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, stderr.fileno(), 2)],
        )
        reaped: list[int] = []

        def ended() -> bool:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                reaped.append(status)
            return bool(reaped)

        try:
            wait_for(ended, timeout=timeout, what=f"{argv[0]} to end")
        finally:
            if not reaped:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        stderr.seek(0)
        return reaped[0], stderr.read().decode("utf-8", "replace")


def child(name: str) -> str:
    return str(CHILDREN / name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Run:
    """A running supervisor; ``finish()`` waits and returns (status, stdout, stderr)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.stdout = b""
        self.stderr = b""
        self.status: Optional[int] = None
        self._stdout_pending = b""  # read past the last line read_stdout_line returned

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def read_stdout_line(self, timeout: float = EVENTUALLY_S) -> str:
        """One line of the child's stdout (inherited through the supervisor).

        Read from the fd itself, with what came after the line kept for the
        next call (and for ``finish``): a buffered ``readline`` could take two
        lines at once and leave the next ``select`` waiting for one it holds.
        """
        import select

        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._stdout_pending:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
            assert ready, f"no stdout line within {timeout} s"
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break  # EOF: what is left, if anything, is the last line
            self._stdout_pending += chunk
        line, newline, self._stdout_pending = self._stdout_pending.partition(b"\n")
        return (line + newline).decode()

    def wait_for_stderr(self, text: str, timeout: float = EVENTUALLY_S) -> None:
        """Read the supervisor's stderr (kept in ``stderr``) until ``text`` shows up."""
        import select

        assert self.process.stderr is not None
        fd = self.process.stderr.fileno()
        os.set_blocking(fd, False)
        deadline = time.monotonic() + timeout
        while text.encode() not in self.stderr:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not on stderr within {timeout} s")
            select.select([fd], [], [], remaining)
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise AssertionError(f"stderr closed before {text!r}")
            self.stderr += chunk

    def finish(self, timeout: float = 2 * EVENTUALLY_S,
               linger: float = 2.0) -> tuple[int, bytes, bytes]:
        """Wait for the supervisor to exit, then collect its output.

        Output is read until EOF or ``linger`` seconds after the exit: an
        orphaned grandchild may hold the pipes open long after.
        """
        import selectors

        streams = {
            stream.fileno(): name
            for stream, name in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr"))
            if stream is not None and not stream.closed
        }
        chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        selector = selectors.DefaultSelector()
        for fd in streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        exited_at: Optional[float] = None
        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and self.process.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > linger:
                break
            if now > deadline:
                raise AssertionError(f"the supervisor did not exit within {timeout} s")
            for key, _ in selector.select(0.05):
                try:
                    data = os.read(key.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if data:
                    chunks[streams[key.fd]].append(data)
                else:
                    selector.unregister(key.fd)
        selector.close()
        code = self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        self.stdout += self._stdout_pending + b"".join(chunks["stdout"])
        self._stdout_pending = b""
        self.stderr += b"".join(chunks["stderr"])
        self.status = code
        return code, self.stdout, self.stderr

    @property
    def text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=5)


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(
        *args: str,
        env: Optional[dict[str, str]] = None,
        stdin: Optional[int] = subprocess.DEVNULL,
        stdout: Optional[int] = subprocess.PIPE,
        stderr: Optional[int] = subprocess.PIPE,
        prefix: Sequence[str] = (),
        preexec_fn: Optional[Callable[[], None]] = None,
    ) -> Run:
        full_env = dict(os.environ)
        full_env.pop("SENTRY_DSN", None)
        full_env.update(env or {})
        process = subprocess.Popen(
            [*prefix, PYTHON, "-m", "supervisor", *args],
            stdin=stdin, stdout=stdout, stderr=stderr, env=full_env, cwd=str(tmp_path),
            start_new_session=True, preexec_fn=preexec_fn,
        )
        run = Run(process)
        runs.append(run)
        return run

    yield start
    for run in runs:
        kill_tree(run.pid)
        if run.process.poll() is None:
            run.process.kill()
        run.process.wait(timeout=10)
        for stream in (run.process.stdout, run.process.stderr):
            if stream is not None:
                stream.close()


def supervisor_lines(stderr: bytes) -> list[str]:
    return [
        line for line in stderr.decode("utf-8", "replace").splitlines()
        if line.startswith("[supervisor] ")
    ]


def needs_unshare() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a PID namespace needs root and util-linux unshare")


UNSHARE_PID = ("unshare", "--pid", "--fork", "--mount-proc")
SIGNALS = signal

"""The child's Python stack, read from outside with py-spy, without stopping the loop.

Owns: finding py-spy, running ``py-spy dump --pid N --nonblocking --json`` as
a process of its own whose output the loop reads as it comes (no thread, no
blocking wait), parsing that output (JSON, or the text format of older
releases) into threads of frames, keeping the last sample with its time, and
the one line that says why sampling is off (ptrace denied, no py-spy, not a
Python process) and how to allow it.
Must not know: when to sample (the loop decides) or how a sample is shown.

py-spy reads the child's memory (``process_vm_readv``) without attaching to
it, so the child runs on while it is read. Its process is not waited for:
the supervisor reaps every child anyway; end of output is the end of a sample.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

from .values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from .reactor import Reactor, Timer

# A dump takes 0.03-0.3 s; one that hangs is killed, and counts as a failure.
DUMP_TIMEOUT_S = 5.0
MAX_OUTPUT = 4 << 20
# A child that has only just exec'd has no interpreter to read yet.
TRANSIENT_FAILURES = 3
# A spawn that failed for want of a resource is tried again at the next tick.
RESOURCE_ERRORS = (errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE)
ALLOW_PTRACE = ("allow ptrace for the container: docker run --cap-add SYS_PTRACE, or "
                "securityContext.capabilities.add: [SYS_PTRACE] on Kubernetes")


@frozen
class StackFrame:
    function: str
    filename: str
    lineno: int

    def text(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"

    def as_json(self) -> dict[str, Any]:
        return {"filename": self.filename, "lineno": self.lineno, "function": self.function}


@frozen
class ThreadStack:
    thread_id: int  # the OS thread id (the pid for the main thread)
    name: str
    frames: tuple[StackFrame, ...]  # oldest first, as in a traceback
    active: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"thread_id": self.thread_id, "name": self.name, "active": self.active,
                "frames": [f.as_json() for f in self.frames]}


@frozen
class StackSample:
    """Every thread's stack at one moment, ``at_s`` seconds after the spawn."""

    pid: int
    at_s: float
    threads: tuple[ThreadStack, ...]
    why: str = "starting"  # what made the loop sample: starting, memory warning, stop grace

    @property
    def main(self) -> Optional[ThreadStack]:
        """The main thread: the one named so, else the one whose id is the pid."""
        for thread in self.threads:
            if thread.name == "MainThread":
                return thread
        for thread in self.threads:
            if thread.thread_id == self.pid:
                return thread
        return self.threads[0] if self.threads else None

    def innermost(self) -> Optional[StackFrame]:
        main = self.main
        return main.frames[-1] if main is not None and main.frames else None

    def importing(self) -> Optional[str]:
        """The file of the innermost module body running: the import in progress."""
        main = self.main
        for frame in reversed(main.frames if main is not None else ()):
            if frame.function == "<module>":
                return frame.filename
        return None

    def as_json(self, ended_s: Optional[float] = None) -> dict[str, Any]:
        main = self.main
        data: dict[str, Any] = {
            "at_s": round(self.at_s, 3),
            "why": self.why,
            "thread": None if main is None else main.name,
            "frames": [] if main is None else [f.as_json() for f in main.frames],
            "other_threads": [t.as_json() for t in self.threads if t is not main],
        }
        if ended_s is not None:
            data["age_s"] = round(max(0.0, ended_s - self.at_s), 3)
        return data


# ------------------------------------------------------------------ parsing


def parse_dump(output: str, pid: int, at_s: float, why: str = "starting") -> StackSample:
    """A sample from py-spy's output, JSON or text; ValueError when it holds no stack."""
    text = output.lstrip()
    threads = parse_json(text) if text.startswith("[") else parse_text(text)
    if not threads:
        raise ValueError("no thread in py-spy's output")
    return StackSample(pid, at_s, threads, why)


def parse_json(text: str) -> tuple[ThreadStack, ...]:
    import json

    threads = []
    for item in json.loads(text):
        frames = tuple(
            StackFrame(str(f.get("name") or "<unknown>"), str(f.get("filename") or "<unknown>"),
                       int(f.get("line") or 0))
            for f in reversed(item.get("frames") or [])
        )
        thread_id = item.get("os_thread_id") or item.get("thread_id") or 0
        threads.append(ThreadStack(int(thread_id), str(item.get("thread_name") or ""), frames,
                                   bool(item.get("active"))))
    return tuple(threads)


def parse_text(text: str) -> tuple[ThreadStack, ...]:
    """``Thread 7 (idle): "MainThread"`` then ``    function (file.py:12)`` lines."""
    threads: list[ThreadStack] = []
    header: Optional[tuple[int, str, bool]] = None
    frames: list[StackFrame] = []

    def close() -> None:
        if header is not None:
            threads.append(ThreadStack(header[0], header[1], tuple(reversed(frames)), header[2]))

    for line in text.splitlines():
        if line.startswith("Thread "):
            close()
            words = line.split(None, 2)
            ident = words[1] if len(words) > 1 else "0"
            name = line.rsplit('"', 2)[1] if line.count('"') >= 2 else ""
            header = (int(ident, 16) if ident.startswith("0x") else int(ident or 0), name,
                      "(active" in line)
            frames = []
        elif header is not None and line.startswith("    ") and line.rstrip().endswith(")"):
            body = line.strip()[:-1]
            function, _, where = body.rpartition(" (")
            filename, _, lineno = where.rpartition(":")
            frames.append(StackFrame(function, filename, int(lineno) if lineno.isdigit() else 0))
    close()
    return tuple(threads)


def failure(output: str) -> tuple[str, str]:
    """(kind, detail) of a dump that gave no stack: kind is denied, gone or transient."""
    first = next((line.strip() for line in output.splitlines() if line.strip()), "no output")
    detail = first[len("Error: "):] if first.startswith("Error: ") else first
    if "Permission denied" in output or "Operation not permitted" in output:
        return "denied", "Permission denied"
    if "No such file or directory" in output or "No such process" in output:
        return "gone", detail
    return "transient", detail


def find_py_spy(environ_path: Optional[str]) -> Optional[str]:
    """py-spy next to this interpreter (the same venv) first, then on PATH.

    A version manager's shim on PATH (pyenv) is a shell script that costs tens
    of milliseconds per call: the real binary beside the interpreter is preferred.
    """
    candidates = [os.path.join(os.path.dirname(sys.executable), "py-spy")]
    candidates += [os.path.join(d or ".", "py-spy")
                   for d in (environ_path or os.defpath).split(os.pathsep)]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# ------------------------------------------------------------------ sampling


class StackSampler:
    """Runs one py-spy dump at a time and keeps the last good sample.

    ``sample(why)`` starts a dump unless one runs; its output is read by the
    reactor as it comes and parsed at EOF. After a denial (or repeated
    failures) sampling switches off and ``on_off`` gets the one line to print.
    """

    def __init__(
        self, reactor: Reactor, pid: int, started: float, on_off: Callable[[str], None],
        binary: Optional[str] = None,
    ) -> None:
        self._reactor = reactor
        self._pid = pid
        self._started = started
        self._on_off = on_off
        self._binary = binary
        self.last: Optional[StackSample] = None
        self.samples = 0
        self.off_reason: Optional[str] = None
        self._failures = 0
        self._running: Optional[tuple[int, int, float, str]] = None  # (pid, fd, at, why)
        self._output = bytearray()
        self._timer: Optional[Timer] = None
        if binary is None:
            self._switch_off("py-spy is not installed (pip install py-spy)")

    @property
    def on(self) -> bool:
        return self.off_reason is None

    @property
    def busy(self) -> bool:
        return self._running is not None

    def sample(self, why: str = "starting") -> bool:
        """Start a dump now; False when sampling is off or a dump is still running."""
        if self.off_reason is not None or self._running is not None:
            return False
        assert self._binary is not None
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            return False  # no fd to spare now (EMFILE): the next tick tries again
        try:
            pid = os.posix_spawn(
                self._binary,
                [self._binary, "dump", "--pid", str(self._pid), "--nonblocking", "--json"],
                {"PATH": os.defpath, "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"},
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_fd, 1),
                    (os.POSIX_SPAWN_DUP2, write_fd, 2),
                ],
                # Its own group (a signal for the app's group never reaches it),
                # no blocked signals, and default actions for what we handle.
                setpgroup=0,
                setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGTERM, signal.SIGINT),
            )
        except OSError as error:
            os.close(read_fd)
            if error.errno not in RESOURCE_ERRORS:
                self._switch_off(f"cannot run {self._binary}: {error.strerror or error}")
            return False
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._running = (pid, read_fd, self._reactor.clock() - self._started, why)
        self._output.clear()
        self._reactor.add_reader(read_fd, self._on_readable)
        self._timer = self._reactor.call_later(DUMP_TIMEOUT_S, self._on_timeout)
        return True

    def _on_readable(self) -> None:
        assert self._running is not None
        fd = self._running[1]
        try:
            chunk = os.read(fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        if chunk and len(self._output) < MAX_OUTPUT:
            self._output += chunk
            return
        if chunk:
            return  # past the cap: read on to EOF, keep nothing more
        self._done(self._output.decode("utf-8", "replace"))

    def _on_timeout(self) -> None:
        if self._running is None:
            return
        # Still no EOF: py-spy is alive (it holds the pipe), so its pid is still its own.
        try:
            os.kill(self._running[0], signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._done(f"Error: no answer within {DUMP_TIMEOUT_S:g} s")

    def _done(self, output: str) -> None:
        assert self._running is not None
        _, fd, at_s, why = self._running
        self._stop_dump(fd)
        try:
            sample = parse_dump(output, self._pid, at_s, why)
        except ValueError:
            self._failed(output)
            return
        except (ImportError, OSError, TypeError, KeyError):
            # Output that is not py-spy's, or no fd to import json with: not this time.
            self._failures += 1
            return
        self.last = sample
        self.samples += 1
        self._failures = 0

    def _failed(self, output: str) -> None:
        kind, detail = failure(output)
        if kind == "denied":
            self._switch_off(f"the kernel does not let py-spy read pid {self._pid} "
                             f"({detail}); {ALLOW_PTRACE}")
        elif kind == "transient":
            self._failures += 1
            if self._failures >= TRANSIENT_FAILURES:
                self._switch_off(f"py-spy cannot read a Python stack in pid {self._pid} "
                                 f"({detail})")

    def _switch_off(self, reason: str) -> None:
        if self.off_reason is None:
            self.off_reason = reason
            self._on_off(f"stack sampling off: {reason}")

    def close(self) -> None:
        """Stop a dump still running (the child is gone; nothing more to read)."""
        if self._running is not None:
            pid, fd, _, _ = self._running
            try:
                still_open = os.read(fd, 1 << 16) != b""
            except (BlockingIOError, InterruptedError):
                still_open = True
            if still_open:  # no EOF: py-spy still holds the pipe, so the pid is its own
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._stop_dump(fd)
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop_dump(self, fd: int) -> None:
        """Forget the running dump: its pipe, and its deadline."""
        self._reactor.remove_reader(fd)
        os.close(fd)
        self._running = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

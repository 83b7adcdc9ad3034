"""What every benchmark shares: the tools under test, clean process handling, statistics.

Owns: finding (and installing when missing) tini and dumb-init, building the
C probe, spawning processes so that none outlives the bench, the row type of
the table, and the few statistics the table uses (median, p90, ratios).
Must not know: what any single benchmark measures.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
CHILDREN_DIR = BENCH_DIR / "children"
PYTHON = sys.executable
LOCALHOST = "127.0.0.1"

# Variables that would change what the supervisor does under test; the bench
# sets what it needs explicitly.
_SCRUBBED_PREFIXES = ("SUPERVISOR_", "SENTRY_")


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "FAIL"
    INFO = "info"  # a figure with no target, shown for comparison
    UNAVAILABLE = "n/a"  # the feature or a peer is not there; the row says why


@dataclass(frozen=True)
class Row:
    """One line of the table; ``data`` holds the raw figures for ``--json``."""

    name: str
    ours: str
    peers: str = ""
    ratio: str = ""
    target: str = ""
    verdict: Verdict = Verdict.INFO
    data: Mapping[str, Any] = field(default_factory=dict)


def unavailable(name: str, why: str, target: str = "") -> Row:
    return Row(name=name, ours=why, target=target, verdict=Verdict.UNAVAILABLE)


def judge(ok: bool) -> Verdict:
    return Verdict.PASS if ok else Verdict.FAIL


# -- statistics ----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p90(values: Sequence[float]) -> float:
    """Nearest-rank 90th percentile: with few samples, a value that was really seen."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, -(-len(ordered) * 9 // 10) - 1))
    return ordered[rank]


def ms(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1e3:.1f} ms"


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs > 0 else float("inf")


def fmt_ratio(value: float, against: str) -> str:
    return f"{value:.2f}x {against}"


class Budget:
    """Bounds a repeated measurement in count and in time, whichever comes first."""

    def __init__(self, runs: int, seconds: float) -> None:
        self.runs = runs
        self.deadline = time.monotonic() + seconds

    def __iter__(self) -> Iterator[int]:
        for index in range(self.runs):
            if index > 0 and time.monotonic() > self.deadline:
                return
            yield index


# -- the tools under test --------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A program that runs a command as its child: ``argv + ["CHILD", ...]``."""

    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Context:
    quick: bool
    workdir: Path
    env: Mapping[str, str]
    supervisor: Tool
    # None when the peer could not be found or installed; ``missing`` says why.
    peers: Mapping[str, Optional[Tool]]
    missing: Mapping[str, str]
    probe: Optional[Path]
    probe_error: str
    help_text: str

    def peer_tools(self) -> list[Tool]:
        return [tool for tool in self.peers.values() if tool is not None]

    def supports(self, flag: str) -> bool:
        """Whether the supervisor knows ``flag``; its --help lists every option."""
        return flag in self.help_text


def _scripts_dir() -> Path:
    return Path(sysconfig.get_path("scripts"))


def _real_script(name: str) -> Optional[Path]:
    """The installed script itself, not a version manager's shell shim in front of it.

    A shim (pyenv's is a bash script) adds tens of milliseconds to every start
    and would be measured as the tool's own cost.
    """
    candidate = _scripts_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if found is None:
        return None
    with open(found, "rb") as handle:
        head = handle.read(128)
    if b"pyenv" in head or b"asdf" in head:
        return None
    return Path(found)


def supervisor_tool() -> Tool:
    script = _real_script("supervisor")
    if script is not None:
        return Tool("supervisor", (str(script),))
    return Tool("supervisor", (PYTHON, "-m", "supervisor"))


def _ensure_tini() -> tuple[Optional[Tool], str]:
    path = shutil.which("tini")
    if path is None and shutil.which("apt-get") is not None:
        _quiet_install(["apt-get", "install", "-y", "-q", "tini"])
        path = shutil.which("tini")
    if path is None:
        return None, "tini not installed (apt-get install tini failed)"
    # -s: register as subreaper, since the bench does not run it as PID 1.
    return Tool("tini", (path, "-s", "--")), ""


def _ensure_dumb_init() -> tuple[Optional[Tool], str]:
    path = _real_script("dumb-init")
    if path is None:
        _quiet_install([PYTHON, "-m", "pip", "install", "-q", "dumb-init"])
        path = _real_script("dumb-init")
    if path is None:
        return None, "dumb-init not installed (pip install dumb-init failed)"
    return Tool("dumb-init", (str(path),)), ""


def _quiet_install(argv: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180
        )


def _build_probe(workdir: Path) -> tuple[Optional[Path], str]:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None, "no C compiler (gcc) to build the probe"
    output = workdir / "probe"
    result = subprocess.run(
        [compiler, "-O2", "-o", str(output), str(CHILDREN_DIR / "probe.c")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        return None, f"probe did not compile: {result.stderr.strip()[:200]}"
    return output, ""


def bench_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SCRUBBED_PREFIXES)
    }
    # Children of the bench are Python too (uvicorn): the bench's interpreter first.
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def context(quick: bool) -> Iterator[Context]:
    with tempfile.TemporaryDirectory(prefix="supervisor-bench-") as tmp:
        workdir = Path(tmp)
        tini, tini_missing = _ensure_tini()
        dumb_init, dumb_missing = _ensure_dumb_init()
        probe, probe_error = _build_probe(workdir)
        sup = supervisor_tool()
        help_run = subprocess.run(
            [*sup.argv, "--help"], capture_output=True, text=True, timeout=30, env=bench_env()
        )
        missing = {name: why for name, why in
                   (("tini", tini_missing), ("dumb-init", dumb_missing)) if why}
        yield Context(
            quick=quick,
            workdir=workdir,
            env=bench_env(),
            supervisor=sup,
            peers={"tini": tini, "dumb-init": dumb_init},
            missing=missing,
            probe=probe,
            probe_error=probe_error,
            help_text=help_run.stdout + help_run.stderr,
        )


# -- processes -------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from the kernel's children lists."""
    found: list[int] = []
    pending = [pid]
    while pending and len(found) < 10_000:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    children = [int(part) for part in handle.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            pending.extend(children)
    return found


def kill_tree(process: subprocess.Popen[Any]) -> None:
    """SIGKILL a process started by ``spawn``, its group and every descendant."""
    if process.poll() is None:
        victims = descendants(process.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@contextlib.contextmanager
def spawn(argv: Sequence[str], env: Mapping[str, str], **options: Any) -> Iterator[
    subprocess.Popen[bytes]
]:
    """Popen in a new session, killed with all its descendants when the block ends."""
    process = subprocess.Popen(list(argv), env=dict(env), start_new_session=True, **options)
    try:
        yield process
    finally:
        kill_tree(process)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def wait_exit(process: subprocess.Popen[Any], seconds: float) -> Optional[int]:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def read_line(fd: int, seconds: float) -> Optional[bytes]:
    """One line from a pipe within ``seconds``, read byte-wise so nothing past it is lost."""
    deadline = time.monotonic() + seconds
    line = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        byte = os.read(fd, 1)
        if not byte:
            return bytes(line) if line else None
        if byte == b"\n":
            return bytes(line)
        line += byte


def read_ns(fd: int, seconds: float) -> Optional[float]:
    """A CLOCK_MONOTONIC timestamp printed by the probe, in seconds."""
    line = read_line(fd, seconds)
    if line is None:
        return None
    try:
        return int(line.split()[0]) / 1e9
    except (ValueError, IndexError):
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def proc_status_kib(pid: int, field_name: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> Optional[float]:
    """CPU time of every thread of ``pid`` so far.

    From ``schedstat`` (nanoseconds) when the kernel has it: ``stat``'s
    utime+stime count 10 ms ticks, too coarse for a process that should use
    a few tens of milliseconds in a whole run.
    """
    total = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                total += int(handle.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            return _cpu_seconds_from_stat(pid)
    return total


def _cpu_seconds_from_stat(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError, IndexError):
        return None


def unknown_option(stderr: bytes | str) -> bool:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    return "unknown option" in text


def exit_time(process: subprocess.Popen[Any], seconds: float) -> Optional[float]:
    """The monotonic time at which ``process`` exited, seen within about a millisecond.

    Popen.wait(timeout) polls with growing sleeps (up to 50 ms); a pidfd tells at once.
    """
    deadline = time.monotonic() + seconds
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None and process.poll() is None:
        try:
            pidfd = pidfd_open(process.pid)
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            try:
                ready, _, _ = select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    return None
                exited = time.monotonic()
            finally:
                os.close(pidfd)
            wait_exit(process, 5.0)
            return exited
    if wait_exit(process, max(0.0, deadline - time.monotonic())) is None:
        return None
    return time.monotonic()

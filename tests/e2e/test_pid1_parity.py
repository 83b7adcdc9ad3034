"""PID 1 as tini and dumb-init are: every signal, job control, never taking the app down.

Each test reproduces one defect found by running the peers' own test suites
and a hostile review against the supervisor (issue 13), with real processes,
real signals, a real pids cgroup and a real terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

from tests.conftest import (
    PYTHON,
    ROOT,
    UNSHARE_PID,
    Run,
    child,
    free_port,
    kill_tree,
    needs_unshare,
    supervisor_lines,
    wait_for,
)
from tests.sentry_receiver import Receiver


def state_of(pid: int) -> str:
    """The process state letter from /proc (R, S, T for stopped, Z...)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def alive(pid: int) -> bool:
    return state_of(pid) not in ("gone", "Z")


def noted(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def only_child(pid: int) -> int:
    children = wait_for(lambda: psutil.Process(pid).children(), what=f"a child of {pid}")
    return int(children[0].pid)  # type: ignore[index]


# -- 1. signals, as tini and dumb-init -----------------------------------------------


def test_sigalrm_to_a_supervisor_that_is_not_pid1_reaches_the_child(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    received = tmp_path / "received.txt"
    run = supervise("--port", str(free_port()), "--", PYTHON, child("pid1_signal_log.py"),
                    str(received))
    assert run.read_stdout_line(timeout=30) == "ready\n"
    run.signal(signal.SIGALRM)
    wait_for(lambda: "SIGALRM" in noted(received), what="SIGALRM at the child")
    assert run.process.poll() is None, "SIGALRM killed the supervisor"
    run.signal(signal.SIGTERM)
    code, _, err = run.finish()
    assert code == 0
    assert noted(received) == ["SIGALRM", "SIGTERM"]
    assert any("stopped" in line for line in supervisor_lines(err))


# Dropped by PID 1 before; tini and dumb-init forward them. TTIN/TTOU/TSTP
# included: as PID 1 the supervisor forwards them and does not stop itself.
AS_PID1 = ("SIGALRM", "SIGPIPE", "SIGCONT", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM",
           "SIGPROF", "SIGIO", "SIGPWR", "SIGSYS", "SIGTRAP", "SIGABRT", "SIGTSTP",
           "SIGTTIN", "SIGTTOU", "SIGHUP", "SIGUSR1")


def test_as_pid1_every_catchable_signal_reaches_the_child(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_unshare()
    received = tmp_path / "received.txt"
    report = tmp_path / "report.json"
    run = supervise("--port", str(free_port()), "--report-file", str(report), "--",
                    PYTHON, child("pid1_signal_log.py"), str(received), prefix=UNSHARE_PID)
    assert run.read_stdout_line(timeout=30) == "ready\n"
    pid1 = only_child(run.pid)
    realtime = signal.SIGRTMIN + 3
    for name in (*AS_PID1, "SIGRTMIN+3"):
        number = realtime if name == "SIGRTMIN+3" else getattr(signal, name)
        os.kill(pid1, number)

        def arrived(expected: str = name) -> bool:
            return expected in noted(received)

        wait_for(arrived, timeout=15, what=f"{name} at the child of PID 1")
        assert state_of(pid1) != "T", f"PID 1 stopped on {name}"
    os.kill(pid1, signal.SIGTERM)
    # unshare's own exit status is not the supervisor's (FACTS.md): the report is.
    run.finish()
    data = json.loads(report.read_text())
    assert data["cause"] == "stopped"
    assert data["status"] == 0
    assert sorted(noted(received)) == sorted([*AS_PID1, "SIGRTMIN+3", "SIGTERM"])


@pytest.mark.parametrize("stop", ["SIGTSTP", "SIGTTOU"])
def test_a_job_control_stop_stops_the_child_then_the_supervisor_and_cont_resumes_both(
    supervise: Callable[..., Run], stop: str
) -> None:
    report_port = str(free_port())
    run = supervise("--port", report_port, "--", "sleep", "120")
    app = only_child(run.pid)
    wait_for(lambda: psutil.Process(app).name() == "sleep", what="sleep to start")
    run.signal(getattr(signal, stop))
    # As dumb-init: the child first (default action: stop), then the supervisor itself.
    wait_for(lambda: state_of(app) == "T", timeout=15, what=f"the child stopped by {stop}")
    wait_for(lambda: state_of(run.pid) == "T", timeout=15, what="the supervisor stopped")
    run.signal(signal.SIGCONT)
    wait_for(lambda: state_of(run.pid) not in ("T", "t"), what="the supervisor to go on")
    wait_for(lambda: state_of(app) not in ("T", "t"), what="SIGCONT forwarded to the child")
    run.signal(signal.SIGTERM)
    code, _, err = run.finish()
    assert code == 128 + signal.SIGTERM
    lines = supervisor_lines(err)
    assert any("stopped" in line for line in lines), lines
    assert any(stop in line and "SIGCONT" in line for line in lines), lines


def test_a_sigpipe_the_supervisor_raises_itself_is_not_forwarded_but_one_sent_to_it_is(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    received = tmp_path / "received.txt"
    run = supervise("--port", str(free_port()), "--", PYTHON, child("pid1_signal_log.py"),
                    str(received))
    assert run.read_stdout_line(timeout=30) == "ready\n"
    # Nobody reads the supervisor's stderr any more: its next line raises SIGPIPE on itself.
    assert run.process.stderr is not None
    run.process.stderr.close()
    run.signal(signal.SIGINT)  # a stop: the supervisor says so on stderr
    wait_for(lambda: "SIGINT" in noted(received), what="SIGINT at the child")
    sigpipe = 1 << (signal.SIGPIPE - 1)

    def pending_sigpipe() -> bool:
        with open(f"/proc/{run.pid}/status") as status:
            fields = dict(line.split(":\t", 1) for line in status if ":\t" in line)
        return bool(int(fields["SigPnd"], 16) & sigpipe or int(fields["ShdPnd"], 16) & sigpipe)

    # Its own SIGPIPE waited, blocked, until the supervisor looked at it and dropped it.
    wait_for(lambda: not pending_sigpipe(), timeout=15, what="the supervisor to take its SIGPIPE")
    # Signals reach a Python handler in the order of their numbers: SIGWINCH (28)
    # comes after any SIGPIPE (13) that was forwarded before it.
    run.signal(signal.SIGWINCH)
    wait_for(lambda: "SIGWINCH" in noted(received), what="SIGWINCH at the child")
    assert "SIGPIPE" not in noted(received)
    run.signal(signal.SIGPIPE)
    wait_for(lambda: "SIGPIPE" in noted(received), timeout=15, what="a sent SIGPIPE at the child")
    assert run.process.poll() is None
    run.signal(signal.SIGTERM)
    code, _, _ = run.finish()
    assert code == 0
    assert noted(received) == ["SIGINT", "SIGWINCH", "SIGPIPE", "SIGTERM"]


# -- 4. the app never outlives a SIGKILLed supervisor ----------------------------------


def test_the_app_dies_with_a_sigkilled_supervisor_that_is_not_pid1(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    received = tmp_path / "received.txt"
    run = supervise("--port", str(free_port()), "--", PYTHON, child("pid1_signal_log.py"),
                    str(received))
    assert run.read_stdout_line(timeout=30) == "ready\n"
    app = psutil.Process(only_child(run.pid))
    run.signal(signal.SIGKILL)
    run.process.wait(timeout=10)
    # Re-parented to a subreaper or init, which reaps it: gone, not merely a zombie.
    wait_for(lambda: not app.is_running() or app.status() == psutil.STATUS_ZOMBIE,
             timeout=15, what="the app to die with its supervisor")


# -- 8. the interpreter's own locale coercion stays its own ---------------------------


def test_the_supervisors_locale_coercion_does_not_reach_the_child(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    seen = tmp_path / "environ.json"
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("LC_") and name not in ("LANG", "LANGUAGE")}
    env["PYTHONCOERCECLOCALE"] = "1"
    argv = [PYTHON, "-m", "supervisor", "--port", str(free_port()), "--",
            PYTHON, child("pid1_environ.py"), str(seen)]
    with subprocess.Popen(argv, env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    inherited = json.loads(seen.read_text())
    assert "LC_CTYPE" not in inherited
    # A value the user gave is theirs, and passes.
    env["LC_CTYPE"] = "C.UTF-8"
    argv[4] = str(free_port())
    with subprocess.Popen(argv, env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
        process.communicate(timeout=60)
    assert json.loads(seen.read_text())["LC_CTYPE"] == "C.UTF-8"


# -- 2. never take the app down ------------------------------------------------------


@contextlib.contextmanager
def pids_cgroup(limit: int) -> Iterator[str]:
    """A v1 pids cgroup with ``limit``, nested under this process's own; removed after."""
    if os.geteuid() != 0:
        pytest.skip("a pids cgroup needs root")
    own = None
    with open("/proc/self/cgroup") as groups:
        for line in groups:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "pids" in controllers.split(","):
                own = path
    mount = None
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            dash = fields.index("-")
            if fields[dash + 1] == "cgroup" and "pids" in fields[dash + 3].split(","):
                mount = (fields[3], fields[4])
    if own is None or mount is None:
        pytest.skip("no cgroup v1 pids controller here")
    root, point = mount
    name = f"supervisor-test-{uuid.uuid4().hex[:12]}"
    group = os.path.join(point, os.path.relpath(own, root), name)
    try:
        os.mkdir(group)
    except OSError as error:
        pytest.skip(f"cannot create a pids cgroup: {error}")
    try:
        with open(os.path.join(group, "pids.max"), "w") as limit_file:
            limit_file.write(str(limit))
        yield group
    finally:
        deadline = time.monotonic() + 10
        while True:
            with open(os.path.join(group, "cgroup.procs")) as procs:
                for pid in procs.read().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            try:
                os.rmdir(group)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def join_cgroup(group: str) -> None:
    """For ``preexec_fn``: the process joins ``group`` before it execs."""
    with open(os.path.join(group, "cgroup.procs"), "w") as procs:
        procs.write("0")


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_an_app_holding_every_pid_leaves_its_supervisor_running(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    with pids_cgroup(64) as group:

        run = supervise(
            "--report-file", str(report), "--",
            PYTHON, "-m", "uvicorn", "--app-dir", str(Path(child("pid1_thread_hog.py")).parent),
            "pid1_thread_hog:app", "--lifespan", "on", "--host", "127.0.0.1", "--port", str(port),
            preexec_fn=lambda: join_cgroup(group),
        )
        # Ready, and after it the look at the app's health path: the supervisor
        # needs no thread (and no pid) for it, or for anything while the app runs.
        run.wait_for_stderr("ready after", timeout=60)
        status, body = http_get(port)
        assert status == 200
        assert json.loads(body)["threads"] > 30
        with open(os.path.join(group, "pids.current")) as current:
            assert int(current.read()) == 64
        # uvicorn's access log (on stdout) shows the supervisor's look at /healthz.
        wait_for(lambda: "/healthz" in run.read_stdout_line(timeout=60), timeout=60,
                 what="the supervisor's request for /healthz")
        assert run.process.poll() is None
        run.signal(signal.SIGTERM)
        code, _, err = run.finish(timeout=60)
    lines = supervisor_lines(err)
    assert not any("Traceback" in line or "thread" in line for line in lines), "\n".join(lines)
    assert code in (0, 128 + signal.SIGTERM)
    assert json.loads(report.read_text())["cause"] == "stopped"


def test_a_sentry_thread_the_pids_limit_refuses_costs_only_the_event(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    with pids_cgroup(64) as group, Receiver() as receiver:

        run = supervise("--sentry-dsn", receiver.dsn, "--report-file", str(report), "--",
                        PYTHON, child("pid1_pid_hog_then_crash.py"),
                        preexec_fn=lambda: join_cgroup(group))
        # The app dies while a process it left holds every pid: the delivery
        # thread cannot start. One line says so; the report and status stay.
        code, _, err = run.finish(timeout=60)
    lines = supervisor_lines(err)
    assert any("cannot start a thread" in line for line in lines), "\n".join(lines)
    # The app's traceback is quoted in the block ("|" lines); none of our own.
    assert not any("Traceback" in line and "|" not in line for line in lines), "\n".join(lines)
    assert code == 1
    data = json.loads(report.read_text())
    assert data["cause"] == "python_exception"
    assert "the pids were taken" in data["summary"]
    assert receiver.envelopes == []


def test_without_file_descriptors_the_supervisor_still_ends_with_the_apps_status(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    received = tmp_path / "received.txt"
    report = tmp_path / "report.json"
    run = supervise("--port", str(free_port()), "--report-file", str(report), "--",
                    PYTHON, child("pid1_signal_log.py"), str(received))
    assert run.read_stdout_line(timeout=30) == "ready\n"
    # From now on every open() in the supervisor fails with EMFILE: /proc for
    # memory, the report file, the stub's accept.
    resource.prlimit(run.pid, resource.RLIMIT_NOFILE, (3, 3))
    run.signal(signal.SIGUSR1)
    wait_for(lambda: "SIGUSR1" in noted(received), what="SIGUSR1 forwarded without fds")
    run.signal(signal.SIGTERM)
    code, _, err = run.finish()
    text = err.decode()
    assert code == 0, text
    # Whatever could not be imported or opened, the end is said, and the status is the app's.
    assert "the app ended: stopped" in text
    assert f"not written to {report}" in text
    assert not report.exists()
    # Nothing escaped: every line is the supervisor's or the app's own.
    assert all(line.startswith(("[supervisor] ", "got SIG")) for line in text.splitlines()), text


def test_when_the_loop_itself_breaks_the_supervisor_carries_on_as_tini(
    tmp_path: Path,
) -> None:
    received = tmp_path / "received.txt"
    report = tmp_path / "report.json"
    argv = [PYTHON, child("pid1_broken_loop.py"), "--port", str(free_port()),
            "--report-file", str(report), "--", PYTHON, child("pid1_signal_log.py"),
            str(received)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SENTRY_DSN", None)
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, cwd=str(tmp_path),
                               start_new_session=True)
    run = Run(process)
    try:
        assert run.read_stdout_line(timeout=30) == "ready\n"
        run.signal(signal.SIGUSR2)  # forwarded, then the loop breaks on it
        run.wait_for_stderr("the supervisor's loop cannot go on", timeout=15)
        # Two signals pending at once reach a process in number order (USR1 first):
        # the next one is sent only once the app has noted this one.
        wait_for(lambda: "SIGUSR2" in noted(received), what="SIGUSR2 at the app")
        # Signals are still forwarded, and what the app prints still gets out.
        run.signal(signal.SIGUSR1)
        wait_for(lambda: "SIGUSR1" in noted(received), what="SIGUSR1 forwarded without a loop")
        run.wait_for_stderr("got SIGUSR1", timeout=15)
        run.signal(signal.SIGTERM)
        code, _, err = run.finish()
    finally:
        kill_tree(process.pid)
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert code == 0
    assert noted(received) == ["SIGUSR2", "SIGUSR1", "SIGTERM"]
    data = json.loads(report.read_text())
    assert data["cause"] == "stopped"
    assert data["status"] == 0
    assert "OSError" in data["supervisor_error"]
    assert "got SIGUSR2" in data["stderr_tail"]
    assert data["command"][0] == PYTHON
    text = err.decode()
    assert text.count("the supervisor's loop cannot go on") == 1
    assert "the app ended: stopped" in text


# -- 3. docker run -it IMAGE bash: a shell with job control ----------------------------


class Terminal:
    """A pseudo-terminal; the process started on it gets it as controlling terminal."""

    def __init__(self) -> None:
        import pty

        self.controller, self.terminal = pty.openpty()
        self.seen = b""

    def take(self) -> None:
        """In the child (preexec_fn): a session of its own with this terminal, as a shell gives."""
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(self.terminal, termios.TIOCSCTTY, 0)

    def type(self, text: str) -> None:
        os.write(self.controller, text.encode())

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        import select

        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not on the terminal within {timeout} s; "
                                     f"it shows:\n{self.seen.decode(errors='replace')}")
            ready, _, _ = select.select([self.controller], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.controller, 1 << 16)
                except OSError:  # EIO: nobody has the terminal open any more
                    raise AssertionError(f"the terminal closed before {text!r}:\n"
                                         f"{self.seen.decode(errors='replace')}") from None

    def drain(self) -> None:
        """Read what is left, once nobody writes any more."""
        os.set_blocking(self.controller, False)
        with contextlib.suppress(OSError):  # EAGAIN: all read; EIO: all closed
            while chunk := os.read(self.controller, 1 << 16):
                self.seen += chunk

    def close(self) -> None:
        for fd in (self.controller, self.terminal):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    opened = Terminal()
    yield opened
    opened.close()


def test_bash_on_a_terminal_has_job_control(terminal: Terminal, tmp_path: Path) -> None:
    # As `docker run -it IMAGE bash`: bash is interactive only when both stdin
    # and stderr are the terminal.
    report = tmp_path / "report.json"
    env = {**os.environ, "PS1": "prompt$ ", "TERM": "dumb", "HOME": str(tmp_path)}
    env.pop("SENTRY_DSN", None)
    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "--port", str(free_port()), "--report-file", str(report),
         "--", "bash", "--norc", "--noprofile"],
        stdin=terminal.terminal, stdout=terminal.terminal, stderr=terminal.terminal,
        env=env, cwd=str(tmp_path), preexec_fn=terminal.take,
    )
    try:
        terminal.wait_for("prompt$ ")
        terminal.type("echo flags=$-\n")
        terminal.wait_for("flags=")
        terminal.type("sleep 60\n")

        def sleeping() -> list[psutil.Process]:
            return [p for p in psutil.Process(process.pid).children(recursive=True)
                    if p.name() == "sleep"]

        job = wait_for(sleeping, timeout=30, what="sleep to run")[0]  # type: ignore[index]
        terminal.type("\x1a")  # Ctrl-Z: the terminal stops the foreground job
        terminal.wait_for("Stopped")
        wait_for(lambda: state_of(job.pid) == "T", what="the job stopped")
        terminal.type("jobs; fg\n")  # back to the foreground, running again
        wait_for(lambda: state_of(job.pid) in ("S", "R"), what="the job to run again")
        terminal.type("\x03")  # Ctrl-C: reaches the job in the foreground
        wait_for(lambda: not alive(job.pid), what="the job to end")
        terminal.type("exit 7\n")
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
            process.wait(timeout=10)
    terminal.drain()
    shown = terminal.seen.decode(errors="replace")
    assert "cannot set terminal process group" not in shown, shown
    assert "no job control" not in shown, shown
    flags = re.findall(r"flags=(\w+)", shown)
    assert flags and "m" in flags[0], shown  # monitor mode: job control is on
    assert re.search(r"\[1\]\+ +Stopped +sleep 60", shown), shown
    assert process.returncode == 7
    data = json.loads(report.read_text())
    assert data["cause"] == "exit_code"
    # The child wrote to the terminal itself: nothing was relayed, and the report says so.
    assert data["stderr_tail"] == ""
    assert data["stderr_tail_kept"] is False

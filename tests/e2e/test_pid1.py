"""PID 1 duties: forwarding, the stop grace, reaping, and a clean child state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import psutil

from tests.conftest import (
    PYTHON,
    UNSHARE_PID,
    Run,
    child,
    free_port,
    kill_tree,
    needs_unshare,
    supervisor_lines,
    wait_for,
)


def zombies_of(pid: int) -> list[int]:
    found = []
    for process in psutil.process_iter(["ppid", "status"]):
        if process.info["ppid"] == pid and process.info["status"] == psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


def test_every_forwarded_signal_reaches_the_child(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    received = tmp_path / "received.txt"
    run = supervise(PYTHON, child("signal_log.py"), str(received))
    assert run.read_stdout_line() == "ready\n"
    sent = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"]
    for name in sent:
        run.signal(getattr(signal, name))
        wait_for(lambda name=name: received.exists() and name in received.read_text(),
                 what=f"{name} at the child")
    run.signal(signal.SIGTERM)
    code, _, err = run.finish()
    assert received.read_text().split() == [*sent, "SIGTERM"]
    # SIGINT started the stop grace; the child kept running and exited 0 on SIGTERM.
    assert code == 0
    assert any("stopped" in line for line in supervisor_lines(err))


def test_stop_timeout_kills_a_child_that_ignores_sigterm(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--stop-timeout", "500ms", "--report-file", str(report),
                    PYTHON, child("ignore_sigterm.py"))
    assert run.read_stdout_line() == "ready\n"
    sent_at = time.monotonic()
    run.signal(signal.SIGTERM)
    code, _, _err = run.finish(timeout=60)
    assert code == 137
    assert time.monotonic() - sent_at >= 0.5  # the grace was given, however slow the machine
    data = json.loads(report.read_text())
    assert data["cause"] == "stop_timeout"
    assert data["phase"] == "stopping"
    assert data["signals_received"][0]["signal"] == "SIGTERM"
    assert "did not exit within 0.5 s of SIGTERM" in data["summary"]


def test_clean_stop_of_a_real_uvicorn_app(supervise: Callable[..., Run], tmp_path: Path) -> None:
    import httpx

    port = free_port()
    report = tmp_path / "report.json"
    run = supervise(
        "--report-file", str(report), "--",
        PYTHON, "-m", "uvicorn", "--app-dir", str(Path(child("web_hello.py")).parent),
        "web_hello:app", "--host", "127.0.0.1", "--port", str(port),
    )

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout=60, what="uvicorn to answer")
    # A request error that uvicorn logs and recovers from is not a later stop's cause.
    assert httpx.get(f"http://127.0.0.1:{port}/boom", timeout=5).status_code == 500
    run.signal(signal.SIGTERM)
    code, _, err = run.finish(timeout=60)
    # uvicorn re-raises SIGTERM after its graceful shutdown.
    assert code == 143
    data = json.loads(report.read_text())
    assert data["cause"] == "stopped"
    assert b"Exception in ASGI application" in err


def test_child_starts_with_empty_mask_default_dispositions_and_env_defaults(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    state_file = tmp_path / "state.json"
    run = supervise(PYTHON, child("show_state.py"), str(state_file),
                    env={"PYTHON_COLORS": "1"})
    code, _, _ = run.finish()
    assert code == 0
    state = json.loads(state_file.read_text())
    assert int(state["sig_blocked"], 16) == 0
    assert state["env"]["PYTHONUNBUFFERED"] == "1"
    assert state["env"]["PYTHONFAULTHANDLER"] == "1"
    # A value the user set is kept.
    assert state["env"]["PYTHON_COLORS"] == "1"
    # Its own process group, so that a group kill spares the supervisor.
    assert state["pgid"] == state["pid"]
    assert state["oom_score_adj"] == 1000
    # Nothing of the supervisor's leaks: stdin, stdout, stderr only.
    assert state["fds"][:3] == [0, 1, 2]
    assert len(state["fds"]) <= 4  # listing /proc/self/fd opens one more


def test_child_execs_with_no_signal_blocked_or_ignored(supervise: Callable[..., Run]) -> None:
    # cat is the child itself (Python would ignore SIGPIPE on its own start).
    code, out, _ = supervise("cat", "/proc/self/status").finish()
    assert code == 0
    fields = dict(line.split(":\t", 1) for line in out.decode().splitlines() if ":\t" in line)
    assert int(fields["SigBlk"], 16) == 0
    assert int(fields["SigIgn"], 16) == 0


def test_orphans_are_reaped_as_subreaper_when_not_pid1(
    supervise: Callable[..., Run],
) -> None:
    run = supervise(PYTHON, child("orphans.py"), "200")
    assert run.read_stdout_line() == "orphaned\n"
    supervisor = psutil.Process(run.pid)
    # The orphans were adopted by the supervisor, not by the machine's init.
    wait_for(lambda: not zombies_of(run.pid) and len(supervisor.children()) == 1,
             timeout=60, what="every orphan to exit and be reaped")
    run.signal(signal.SIGTERM)
    assert run.finish()[0] == 0


def test_a_thousand_orphans_are_reaped_as_pid1_in_a_pid_namespace(
    supervise: Callable[..., Run],
) -> None:
    needs_unshare()
    run = supervise(PYTHON, child("orphans.py"), "1000", prefix=UNSHARE_PID)
    assert run.read_stdout_line(timeout=60) == "orphaned\n"
    unshare = psutil.Process(run.pid)
    supervisor = wait_for(lambda: unshare.children(), timeout=60,
                          what="the supervisor in the namespace")
    pid1 = supervisor[0].pid  # type: ignore[index]
    # The grandchildren sleep 0.2 s, then exit: every one is reaped, none left a zombie.
    # How fast is measured in bench/ (reaping).
    wait_for(lambda: len(psutil.Process(pid1).children()) == 1 and not zombies_of(pid1),
             timeout=60, interval=0.02, what="zero zombies")
    os.kill(pid1, signal.SIGTERM)
    run.finish(timeout=60)


def test_exit_status_passes_through_pid1_in_a_namespace(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_unshare()
    run = supervise(PYTHON, child("exit_with.py"), "SIGSEGV", prefix=UNSHARE_PID)
    code, _, err = run.finish()
    assert code == 139
    assert any("fatal_signal" in line for line in supervisor_lines(err))


def test_kill_group_forwards_to_the_whole_process_group(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    received = tmp_path / "received.txt"
    # A shell whose own child (in the same group) logs signals; the shell ignores USR1.
    script = (
        f"trap '' USR1; {PYTHON} {child('signal_log.py')} {received} & "
        "wait $!; wait $!"
    )
    run = supervise("--kill-group", "sh", "-c", script)
    assert run.read_stdout_line() == "ready\n"
    run.signal(signal.SIGUSR1)
    wait_for(lambda: received.exists() and "SIGUSR1" in received.read_text(),
             what="SIGUSR1 at the grandchild")
    run.signal(signal.SIGTERM)
    run.finish()


def test_without_kill_group_only_the_child_is_signalled(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    received = tmp_path / "received.txt"
    script = f"{PYTHON} {child('signal_log.py')} {received} & wait $!; wait $!"
    run = supervise("sh", "-c", script)
    assert run.read_stdout_line() == "ready\n"
    tree = psutil.Process(run.pid).children(recursive=True)
    try:
        run.signal(signal.SIGUSR1)
        # The shell had no trap: it died of SIGUSR1, and the grandchild got nothing.
        code, _, _ = run.finish()
        assert code == 128 + signal.SIGUSR1
        assert not received.exists() or "SIGUSR1" not in received.read_text()
    finally:
        for process in tree:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


def test_on_a_terminal_the_child_gets_the_foreground_and_ctrl_c_is_a_stop(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    import pty
    import termios

    report = tmp_path / "report.json"
    controller, terminal = pty.openpty()
    script = (
        "import os, signal, sys\n"
        "print('foreground' if os.tcgetpgrp(0) == os.getpgrp() else 'background', flush=True)\n"
        "signal.pause()\n"
    )

    def own_terminal() -> None:
        # A session of its own with the pty as controlling terminal, as a shell gives.
        import fcntl

        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "--report-file", str(report), "--", PYTHON, "-c", script],
        stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path),
        preexec_fn=own_terminal,
    )
    os.close(terminal)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"foreground\n"
        # Ctrl-C on the terminal: the line discipline signals the foreground group.
        os.write(controller, b"\x03")
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
            process.wait(timeout=10)
        os.close(controller)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    data = json.loads(report.read_text())
    assert data["cause"] == "stopped", data["summary"]
    assert "Ctrl-C" in data["summary"]
    assert process.returncode == 128 + signal.SIGINT


def test_a_stop_signal_that_arrives_before_the_spawn_reaches_the_child(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    # The env file is a FIFO: the supervisor waits in open() before it can spawn.
    env_file = tmp_path / "app.env"
    os.mkfifo(env_file)
    received = tmp_path / "received.txt"
    report = tmp_path / "report.json"
    run = supervise("--env-file", str(env_file), "--report-file", str(report),
                    PYTHON, child("signal_log.py"), str(received))
    waiting = ("wait_for_partner", "fifo_open")
    wait_for(lambda: Path(f"/proc/{run.pid}/wchan").read_text() in waiting, timeout=60,
             what="the supervisor to wait for its env file")
    run.signal(signal.SIGTERM)
    with open(env_file, "w") as writer:
        writer.write("GREETING=hello\n")
    code, _, _ = run.finish()
    # It reached the child so early that Python had not installed its handler
    # yet: the default action ended it, as the platform's SIGTERM would have.
    data = json.loads(report.read_text())
    assert code == 128 + signal.SIGTERM or received.read_text().split() == ["SIGTERM"]
    assert data["cause"] == "stopped"
    assert data["signals_received"][0]["signal"] == "SIGTERM"

"""Memory through the real supervisor: OOM kills with evidence, peaks, the warning."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Callable

import psutil
import pytest

from tests.cgroups import join, memory_cgroup, unusable_reason
from tests.conftest import PYTHON, Run, child, supervisor_lines, wait_for

MIB = 1 << 20


def needs_cgroup() -> None:
    reason = unusable_reason()
    if reason is not None:
        pytest.skip(f"needs a writable memory cgroup: {reason}")


def test_oom_kill_in_a_real_cgroup_is_oom_killed_with_its_evidence(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_cgroup()
    report = tmp_path / "report.json"
    with memory_cgroup(96 * MIB) as group:
        # The supervisor runs inside the limited group, as PID 1 of a container would.
        run = supervise("--report-file", str(report), "--memory-interval", "50ms",
                        PYTHON, child("mem_grow.py"), "--step-mb", "4",
                        preexec_fn=join(group))
        code, _, err = run.finish(timeout=60)
    assert code == 137
    data = json.loads(report.read_text())
    assert data["cause"] == "oom_killed", data["summary"]
    assert "oom_kill counter rose" in data["summary"]
    assert data["oom_evidence"].startswith("cgroup oom_kill counter rose by")
    memory = data["memory"]
    assert memory["cgroup_limit_bytes"] == 96 * MIB
    assert memory["oom_kills"] >= 1
    assert memory["cgroup_peak_bytes"] >= 0.9 * 96 * MIB
    assert 0.6 * 96 * MIB <= memory["peak_rss_bytes"] <= 1.5 * 96 * MIB
    assert memory["samples"], "the timeline was sampled"
    # The supervisor survived to tell it: the kernel chose the child.
    assert any("oom_killed" in line for line in supervisor_lines(err))
    assert any(line.startswith("[supervisor] memory:") and "of 96 MiB" in line
               for line in supervisor_lines(err))


def test_a_plain_kill_9_is_killed_not_oom(supervise: Callable[..., Run], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), PYTHON, child("ignore_sigterm.py"))
    assert run.read_stdout_line() == "ready\n"
    psutil.Process(run.pid).children()[0].kill()
    code, _, _ = run.finish()
    assert code == 137
    data = json.loads(report.read_text())
    assert data["cause"] == "killed"
    assert data.get("oom_evidence") is None


def test_a_300_mb_spike_freed_at_once_shows_in_the_peak(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = supervise("--report-file", str(report), PYTHON, child("mem_spike.py"), "--mb", "300")
    code, _, _ = run.finish()
    assert code == 0
    data = json.loads(report.read_text())
    # Sampling at 2 Hz cannot see it; wait4's ru_maxrss does.
    assert data["memory"]["peak_rss_bytes"] >= 300 * MIB


def test_the_memory_warning_fires_once_at_the_threshold(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    needs_cgroup()
    with memory_cgroup(128 * MIB) as group:
        run = supervise("--memory-interval", "50ms", "--memory-warn", "50%",
                        PYTHON, child("mem_grow.py"), "--step-mb", "4", "--interval", "0.05",
                        "--max-mb", "100", preexec_fn=join(group))
        wait_for(lambda: run.read_stdout_line(timeout=10).startswith("allocated 100 MiB"),
                 timeout=30, interval=0, what="the child to reach 100 MiB")
        run.signal(signal.SIGTERM)
        code, _, err = run.finish(timeout=60)
    assert code == 128 + signal.SIGTERM
    warnings = [line for line in supervisor_lines(err) if "memory" in line and "warning" in line]
    assert len(warnings) == 1, warnings
    assert "of 128 MiB" in warnings[0]


def test_the_termination_log_gets_the_final_summary(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    run = supervise("--termination-log", str(termination_log), PYTHON,
                    child("exit_with.py"), "3")
    assert run.finish()[0] == 3
    assert termination_log.read_text().startswith("exit_code: exited with code 3")

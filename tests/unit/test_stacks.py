"""The child's stack from outside: real py-spy over real Python processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.reactor import Reactor
from supervisor.stacks import (
    ALLOW_PTRACE,
    StackSample,
    StackSampler,
    failure,
    find_py_spy,
    parse_dump,
    parse_text,
)
from tests.conftest import child

PY_SPY = find_py_spy(os.environ.get("PATH"))
pytestmark = pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed")


@pytest.fixture
def waiting_child() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, child("forensics_stack.py"), "60"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    yield process
    process.kill()
    process.wait(timeout=10)
    process.stdout.close()


def dump(pid: int, *extra: str) -> subprocess.CompletedProcess[str]:
    assert PY_SPY is not None
    return subprocess.run([PY_SPY, "dump", "--pid", str(pid), "--nonblocking", *extra],
                          capture_output=True, text=True, timeout=60)


def assert_waits_in_known_function(sample: StackSample, pid: int) -> None:
    main = sample.main
    assert main is not None and main.name == "MainThread"
    assert main.thread_id == pid
    functions = [f.function for f in main.frames]
    assert functions[0] == "<module>"
    assert functions[-1] == "wait_in_known_function"
    inner = sample.innermost()
    assert inner is not None and inner.filename.endswith("forensics_stack.py") and inner.lineno > 0
    others = [t for t in sample.threads if t is not main]
    assert [t.name for t in others] == ["helper"]
    assert others[0].frames[-1].function == "helper_loop"
    assert sample.importing() == child("forensics_stack.py")


def test_json_dump_of_a_real_process_gives_the_main_thread(
    waiting_child: subprocess.Popen[str],
) -> None:
    result = dump(waiting_child.pid, "--json")
    assert result.returncode == 0, result.stderr
    sample = parse_dump(result.stdout, waiting_child.pid, 1.5)
    assert_waits_in_known_function(sample, waiting_child.pid)
    data = sample.as_json(ended_s=1.9)
    assert data["age_s"] == 0.4 and data["thread"] == "MainThread"
    assert data["frames"][-1]["function"] == "wait_in_known_function"


def test_text_dump_of_older_releases_parses_the_same(
    waiting_child: subprocess.Popen[str],
) -> None:
    result = dump(waiting_child.pid)
    assert result.returncode == 0, result.stderr
    threads = parse_text(result.stdout)
    sample = StackSample(waiting_child.pid, 0.0, threads)
    main = sample.main
    assert main is not None and main.frames[-1].function == "wait_in_known_function"
    # The text format shortens file names.
    assert main.frames[-1].filename.endswith("forensics_stack.py")


def test_failures_are_told_apart_from_real_outputs(tmp_path: Path) -> None:
    gone = dump(2**22 - 3)
    assert gone.returncode != 0
    assert failure(gone.stdout + gone.stderr)[0] == "gone"
    not_python = subprocess.Popen(["sleep", "30"])
    try:
        result = dump(not_python.pid)
    finally:
        not_python.kill()
        not_python.wait()
    assert failure(result.stdout + result.stderr)[0] == "transient"
    with pytest.raises(ValueError):
        parse_dump(result.stdout + result.stderr, not_python.pid, 0.0)


@pytest.fixture
def undumpable() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """A non-dumpable child, and a prefix that runs a command without CAP_SYS_PTRACE."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    process = subprocess.Popen([sys.executable, child("forensics_undumpable.py"), "60"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "undumpable\n"
    try:
        yield process, ["setpriv", "--bounding-set=-sys_ptrace", "--"]
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()


def test_a_denied_read_is_recognised(
    undumpable: tuple[subprocess.Popen[str], list[str]],
) -> None:
    process, prefix = undumpable
    assert PY_SPY is not None
    result = subprocess.run([*prefix, PY_SPY, "dump", "--pid", str(process.pid),
                             "--nonblocking", "--json"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert failure(result.stdout + result.stderr) == ("denied", "Permission denied")


def test_the_sampler_reads_without_blocking_the_loop(
    waiting_child: subprocess.Popen[str],
) -> None:
    reactor = Reactor()
    lines: list[str] = []
    ticks = []
    try:
        sampler = StackSampler(reactor, waiting_child.pid, reactor.clock(), lines.append,
                               binary=PY_SPY)
        assert sampler.sample("starting")
        assert not sampler.sample("again")  # one at a time
        reactor.call_every(0.001, lambda: ticks.append(1) or True)
        reactor.run_until(lambda: sampler.last is not None, reactor.clock() + 30)
        assert sampler.last is not None, lines
        assert_waits_in_known_function(sampler.last, waiting_child.pid)
        assert sampler.last.why == "starting" and sampler.samples == 1
        # The loop went on ticking while py-spy worked (a blocking sample would have
        # been over before the loop ran once). How many ticks depends on the load.
        assert ticks
        assert sampler.sample("memory warning")
        reactor.run_until(lambda: not sampler.busy, reactor.clock() + 30)
        assert sampler.last.why == "memory warning"
        sampler.close()
    finally:
        reactor.close()
    assert lines == []


def test_without_py_spy_sampling_is_off_with_one_line() -> None:
    reactor = Reactor()
    lines: list[str] = []
    try:
        sampler = StackSampler(reactor, os.getpid(), 0.0, lines.append, binary=None)
        assert not sampler.sample()
        assert not sampler.on
    finally:
        reactor.close()
    assert lines == ["stack sampling off: py-spy is not installed (pip install py-spy)"]


def test_a_denied_sampler_switches_off_once_and_says_how_to_allow_it(
    undumpable: tuple[subprocess.Popen[str], list[str]], tmp_path: Path,
) -> None:
    process, prefix = undumpable
    assert PY_SPY is not None
    # The sampler runs py-spy directly; a wrapper drops the capability as Docker does.
    wrapper = tmp_path / "py-spy"
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(prefix)} {PY_SPY} \"$@\"\n")
    wrapper.chmod(0o755)
    reactor = Reactor()
    lines: list[str] = []
    try:
        sampler = StackSampler(reactor, process.pid, reactor.clock(), lines.append,
                               binary=str(wrapper))
        assert sampler.sample()
        reactor.run_until(lambda: not sampler.busy, reactor.clock() + 30)
        assert not sampler.sample()
    finally:
        reactor.close()
    assert sampler.last is None
    assert len(lines) == 1
    assert lines[0].startswith(f"stack sampling off: the kernel does not let py-spy read "
                               f"pid {process.pid} (Permission denied)")
    assert ALLOW_PTRACE in lines[0] and "--cap-add SYS_PTRACE" in lines[0]

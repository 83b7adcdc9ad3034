"""The stderr relay: byte for byte, bounded memory, never blocking the loop."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import termios
import time
from array import array
from pathlib import Path
from typing import Callable

import pytest

from supervisor.relay import TAIL_BYTES, Tail
from tests.conftest import PYTHON, Run, child, supervisor_lines, wait_for

MIB = 1 << 20


def vm_hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for row in status:
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_relay_is_byte_exact_for_200_mb_with_invalid_utf8_and_a_100_mb_line(
    supervise: Callable[..., Run],
) -> None:
    short_total, long_line = 100 * MIB, 100 * MIB
    run = supervise(PYTHON, child("firehose.py"), str(short_total), str(long_line))
    assert run.process.stderr is not None
    fd = run.process.stderr.fileno()
    expected_total = short_total + long_line
    digest = hashlib.sha256()
    received = 0
    deadline = time.monotonic() + 120
    while received < expected_total:
        assert time.monotonic() < deadline, "relay too slow"
        chunk = os.read(fd, min(MIB, expected_total - received))
        assert chunk, "stderr closed early"
        digest.update(chunk)
        received += len(chunk)
    child_digest, child_total = run.read_stdout_line().split()
    assert int(child_total) == expected_total
    assert digest.hexdigest() == child_digest
    # The supervisor's memory stayed bounded while 200 MB went through it.
    assert vm_hwm_bytes(run.pid) < 48 * MIB
    run.signal(signal.SIGTERM)
    code, _, err = run.finish()
    assert code == 0
    # After the relayed bytes come only the supervisor's own lines.
    assert all(line.startswith("[supervisor] ") for line in err.decode().splitlines())


def test_sigterm_is_forwarded_promptly_while_nobody_reads_our_stderr(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    note = tmp_path / "term.txt"
    run = supervise(PYTHON, child("chatter_until_term.py"), str(note))
    assert run.read_stdout_line() == "ready\n"
    assert run.process.stderr is not None
    fd = run.process.stderr.fileno()

    def unread_bytes() -> int:
        size = array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, size)
        return size[0]

    # Our end of the pipe fills up and stays full: the consumer is stalled.
    # (Full is not always 64 KiB: the kernel counts pages, not bytes.)
    last = {"size": -1, "since": time.monotonic()}

    def stalled() -> bool:
        size, now = unread_bytes(), time.monotonic()
        if size != last["size"]:
            last["size"], last["since"] = size, now
        return size >= 16 * 1024 and now - last["since"] >= 0.3

    wait_for(stalled, what="the stderr pipe to fill and stay full")
    sent_at = time.monotonic()
    run.signal(signal.SIGTERM)
    # Blocked behind the stalled pipe it would never arrive: any bounded time shows
    # that it went around it (bench/sigterm.py measures how fast).
    wait_for(note.exists, timeout=30, what="SIGTERM at the child")
    assert float(note.read_text()) - sent_at < 30
    # Closing our end unblocks the supervisor, which exits with the child's status.
    run.process.stderr.close()
    assert run.process.wait(timeout=10) == 0


def test_relay_stdout_passes_stdout_through_the_supervisor(
    supervise: Callable[..., Run],
) -> None:
    payload = "line one\\nline two \\xff\\n"
    run = supervise("--relay-stdout", PYTHON, "-c",
                    f"import sys; sys.stdout.buffer.write(b'{payload}'); sys.exit(4)")
    code, out, err = run.finish()
    assert code == 4
    assert out == b"line one\nline two \xff\n"
    assert supervisor_lines(err)


def test_stdout_is_inherited_directly_by_default(supervise: Callable[..., Run]) -> None:
    run = supervise(PYTHON, "-c", "import os; print(os.fstat(1).st_ino)")
    assert run.process.stdout is not None
    ours = os.fstat(run.process.stdout.fileno()).st_ino
    code, out, _ = run.finish()
    assert code == 0
    # The child writes into the very pipe we read: no copy in between.
    assert int(out.decode()) == ours


def test_tail_keeps_the_last_bytes_and_lines() -> None:
    tail = Tail()
    tail.append(b"x" * (TAIL_BYTES * 3))
    tail.append(b"\nend")
    assert len(tail.text()) <= TAIL_BYTES
    assert tail.text().endswith("\nend")
    lines = Tail()
    for number in range(1000):
        lines.append(f"line {number}\n".encode())
    kept = lines.text().splitlines()
    assert len(kept) == 200
    assert kept[-1] == "line 999"


def test_tail_decodes_invalid_utf8_without_failing() -> None:
    tail = Tail()
    tail.append(b"ok \xff\xfe done\n")
    assert "ok" in tail.text() and "done" in tail.text()


def test_relay_stdout_keeps_stdout_in_the_tail_too(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    import json

    report = tmp_path / "report.json"
    run = supervise("--relay-stdout", "--report-file", str(report), PYTHON, "-c",
                    "import sys; print('from stdout', flush=True); "
                    "print('from stderr', file=sys.stderr, flush=True); sys.exit(3)")
    code, out, _ = run.finish()
    assert code == 3 and b"from stdout" in out
    tail = json.loads(report.read_text())["stderr_tail"]
    assert "from stdout" in tail and "from stderr" in tail

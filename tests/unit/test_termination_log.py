"""Kubernetes' termination message file: a status while running, then the final summary."""

from __future__ import annotations

from pathlib import Path

from supervisor.termination_log import TerminationLog


def test_termination_log_keeps_status_then_final_within_4096_bytes(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    path.write_text("")
    log = TerminationLog(str(path))
    assert log.enabled
    log.write_status("phase starting; memory peak 12 MiB of 512 MiB; long previous text")
    log.write_status("phase running")
    assert path.read_text() == "phase running"
    log.write_final("é" * 3000)  # 6000 bytes: cut at a character boundary
    data = path.read_bytes()
    assert len(data) == 4096 and data.decode() == "é" * 2048
    log.write_status("phase stopping")
    assert path.read_bytes() == data


def test_termination_log_absent_or_unwritable_is_off_and_silent(tmp_path: Path) -> None:
    missing = TerminationLog(str(tmp_path / "nothing"))
    assert not missing.enabled
    missing.write_status("x")
    missing.write_final("x")
    assert not (tmp_path / "nothing").exists()
    directory = TerminationLog(str(tmp_path))
    assert not directory.enabled
    directory.write_final("x")

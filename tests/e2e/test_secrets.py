"""Secrets given as arguments, or written in the crashing line, leave through no output.

A real app run as ``python app.py --token=hunter2secret --password hunter3secret``
prints its argv and crashes on a line that holds a postgres URL with a
password. None of the three secrets may appear in the report file, the
supervisor's block on stderr, the termination log, or the Sentry envelope
(event and attachments), nor in what ``--send-report`` sends again later.
The child's own bytes on stderr are relayed untouched: they are the app's.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Callable

from tests.conftest import PYTHON, Run, supervisor_lines
from tests.sentry_receiver import Receiver

TOKEN, PASSWORD, URL_PASSWORD = "hunter2secret", "hunter3secret", "LiteralPw99"
SECRETS = (TOKEN, PASSWORD, URL_PASSWORD)
APP = (
    "import sys\n"
    "print('argv:', sys.argv, file=sys.stderr, flush=True)\n"
    "print('starting with', ' '.join(sys.argv[1:]), file=sys.stderr, flush=True)\n"
    "\n"
    "def connect(url):\n"
    "    raise ConnectionError('cannot reach the database at ' + url)\n"
    "\n"
    'connect("postgres://admin:LiteralPw99@db.internal/shop")\n'
)


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_argv_and_source_line_secrets_appear_in_no_output(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    report = tmp_path / "report.json"
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    with Receiver() as receiver:
        run = supervise("--report-file", str(report), "--sentry-dsn", receiver.dsn,
                        "--termination-log", str(termination_log), "--",
                        PYTHON, str(app), f"--token={TOKEN}", "--password", PASSWORD)
        code, _, stderr = run.finish(timeout=60)
        envelope = receiver.wait_for(1, timeout=30)[0]
    assert code == 1
    text = stderr.decode("utf-8", "replace")
    # The app's own lines pass through as the app wrote them.
    assert TOKEN in text and PASSWORD in text and URL_PASSWORD in text

    block = "\n".join(supervisor_lines(stderr))
    assert "python_exception" in block
    assert leaked(block) == [], block

    raw = report.read_text()
    data = json.loads(raw)
    print(f"\nreport.json mode {oct(stat.S_IMODE(report.stat().st_mode))}")
    assert data["cause"] == "python_exception"
    assert leaked(raw) == [], raw
    assert data["command"][-3:] == ["--token=[redacted]", "--password", "[redacted]"]
    lines = [frame["context_line"] for frame in data["exception"]["frames"]]
    assert 'connect("postgres://[redacted]@db.internal/shop")' in lines

    assert leaked(termination_log.read_text()) == []

    event_and_attachments = envelope.raw.decode("utf-8", "replace")
    assert envelope.event()["tags"]["cause"] == "python_exception"
    assert leaked(event_and_attachments) == [], event_and_attachments


def test_a_saved_report_sent_again_leaks_nothing(
    supervise: Callable[..., Run], tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    report = tmp_path / "report.json"
    code, _, _ = supervise("--report-file", str(report), "--", PYTHON, str(app),
                           f"--token={TOKEN}", "--password", PASSWORD).finish(timeout=60)
    assert code == 1
    with Receiver() as receiver:
        status, _, stderr = supervise("--sentry-dsn", receiver.dsn, "--send-report",
                                      str(report)).finish(timeout=60)
        envelope = receiver.wait_for(1, timeout=30)[0]
    assert status == 0, stderr.decode()
    assert leaked(envelope.raw.decode("utf-8", "replace")) == []
    assert leaked(stderr.decode("utf-8", "replace")) == []

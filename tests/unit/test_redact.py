"""Secrets are masked wherever they appear: environment values, secret flags, URL credentials.

Tracebacks and argv are real: produced by running Python on a script that
takes ``--token`` and ``--password`` and crashes on a line with a database URL.
How long the masking takes on adversarial text is measured in bench/ (redact).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from supervisor.causes import Ending, classify
from supervisor.child import ExitStatus
from supervisor.redact import MASK, Redactor, is_secret_flag, secrets_in_argv
from supervisor.report import exception_json
from tests.conftest import run_for_wait_status

TOKEN, PASSWORD, URL_PASSWORD = "hunter2secret", "hunter3secret", "LiteralPw99"
APP = (
    "import sys\n"
    "print(sys.argv, file=sys.stderr, flush=True)\n"
    "\n"
    "def connect(url):\n"
    "    raise ConnectionError(f'cannot reach {url}')\n"
    "\n"
    'connect("postgres://admin:LiteralPw99@db.internal/shop")\n'
)


def test_values_of_secret_looking_variables_are_masked() -> None:
    redact = Redactor.from_environ({
        "STRIPE_API_KEY": "sk_live_abcdef", "DB_PASSWORD": "hunter22", "HOME": "/root",
        "SHORT_TOKEN": "x1",
    })
    text = redact.text("key sk_live_abcdef pw hunter22 home /root token x1")
    assert "sk_live_abcdef" not in text and "hunter22" not in text
    assert "/root" in text  # not a secret-looking name
    assert "x1" in text  # too short to mask without masking everything
    assert text.count(MASK) == 2


def test_credentials_in_urls_are_masked_whatever_their_source() -> None:
    text = Redactor([]).text("connect postgres://app:s3cret@db:5432/app failed")
    assert text == f"connect postgres://{MASK}@db:5432/app failed"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:only-a-password@cache:6379/0", f"redis://{MASK}@cache:6379/0"),
        ("postgres://admin:p@ss@db/shop", f"postgres://{MASK}@db/shop"),
        ("https://user@example.com/x", f"https://{MASK}@example.com/x"),
        ("amqp+ssl://guest:guest@mq//", f"amqp+ssl://{MASK}@mq//"),
    ],
)
def test_every_form_of_url_credentials_is_masked(url: str, shown: str) -> None:
    assert Redactor([]).text(f"url={url} end") == f"url={shown} end"


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com/users/a@b.c",  # an @ in the path is not userinfo
        "mail me at someone@example.com",
        "http://localhost:8000/healthz",
    ],
)
def test_urls_without_credentials_are_left_alone(text: str) -> None:
    assert Redactor([]).text(text) == text


@pytest.mark.parametrize(
    ("flag", "secret"),
    [
        ("--token", True), ("--password", True), ("--api-key", True), ("--api_key", True),
        ("--secret", True), ("--db-password", True), ("--auth-token", True),
        ("--client-secret", True), ("--passwd", True), ("--sentry-dsn", True),
        ("--port", False), ("--host", False), ("--ssl-keyfile", False),
        ("--token-file", False), ("--password-file", False), ("--no-auth", False),
        ("--max-tokens", False), ("-p", False), ("-t", False), ("--auth-mode", False),
    ],
)
def test_which_flags_take_a_secret(flag: str, secret: bool) -> None:
    assert is_secret_flag(flag) is secret


def test_secret_flags_in_an_argv_are_masked_and_the_flags_kept() -> None:
    argv = ["python", "app.py", f"--token={TOKEN}", "--password", PASSWORD, "--port", "8000",
            "--api-key", "k-123456", "--secret", "s-abcdef", "--workers", "2"]
    assert Redactor([]).argv(argv) == [
        "python", "app.py", f"--token={MASK}", "--password", MASK, "--port", "8000",
        "--api-key", MASK, "--secret", MASK, "--workers", "2",
    ]


def test_dash_p_is_a_password_only_after_a_user_flag() -> None:
    redact = Redactor([])
    assert redact.argv(["mysql", "-u", "root", "-h", "db", "-p", "pw-12345", "shop"]) == [
        "mysql", "-u", "root", "-h", "db", "-p", MASK, "shop"]
    assert redact.argv(["mysql", "-uroot", "-ppw-12345"]) == ["mysql", "-uroot", f"-p{MASK}"]
    assert redact.argv(["mysql", "--user=root", "-p", "pw"]) == [
        "mysql", "--user=root", "-p", MASK]
    # psql's -p is a port; python's -u is unbuffered output.
    assert redact.argv(["psql", "-U", "admin", "-p", "5432"]) == [
        "psql", "-U", "admin", "-p", "5432"]
    assert redact.argv(["python3", "-u", "app.py", "-p", "8080"]) == [
        "python3", "-u", "app.py", "-p", "8080"]
    assert secrets_in_argv(["mysql", "-u", "root", "-p", "pw-12345"]) == ["pw-12345"]


def test_a_flag_after_a_secret_flag_is_not_taken_for_its_value() -> None:
    # --auth with no value (a switch), then the next flag.
    assert Redactor([]).argv(["app", "--auth", "--port", "80"]) == ["app", "--auth", "--port",
                                                                    "80"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"starting with --token={TOKEN} now", f"starting with --token={MASK} now"),
        (f"--password {PASSWORD} --port 80", f"--password {MASK} --port 80"),
        (f'--api-key "{TOKEN}" x', f'--api-key "{MASK}" x'),
        (f"['app.py', '--password', '{PASSWORD}']", f"['app.py', '--password', '{MASK}']"),
        (f'["app.py", "--token", "{TOKEN}"]', f'["app.py", "--token", "{MASK}"]'),
        (f"mysql -u root -p {PASSWORD} shop", f"mysql -u root -p {MASK} shop"),
        (f"mysql -uroot -p{PASSWORD} shop", f"mysql -uroot -p{MASK} shop"),
        ("psql -U admin -p 5432 shop", "psql -U admin -p 5432 shop"),
        ("uvicorn app:app --port 8000 --ssl-keyfile key.pem",
         "uvicorn app:app --port 8000 --ssl-keyfile key.pem"),
    ],
)
def test_secret_flags_in_text_are_masked(text: str, shown: str) -> None:
    assert Redactor([]).text(text) == shown


def test_values_from_the_argv_are_masked_wherever_they_appear() -> None:
    argv = ["python", "app.py", f"--token={TOKEN}", "--password", PASSWORD]
    redact = Redactor.from_environ({}, argv)
    # The app echoes the value alone, without its flag.
    assert redact.text(f"logged in with {PASSWORD}; token {TOKEN}") == (
        f"logged in with {MASK}; token {MASK}")


def test_masking_twice_changes_nothing() -> None:
    redact = Redactor.from_environ({"DB_PASSWORD": "hunter22"}, ["app", "--token", TOKEN])
    text = (f"--token {TOKEN} postgres://a:{URL_PASSWORD}@db/x hunter22 "
            f"-u root -p {PASSWORD} ['--password', 'pw-abc']")
    once = redact.text(text)
    assert redact.text(once) == once
    for secret in (TOKEN, URL_PASSWORD, "hunter22", PASSWORD, "pw-abc"):
        assert secret not in once


def test_every_string_of_a_json_value_is_masked_and_the_rest_kept() -> None:
    redact = Redactor.from_environ({}, ["app", "--token", TOKEN])
    data = {
        "command": ["app", "--token", TOKEN],
        "exception": {"frames": [{"context_line": f'c("postgres://a:{URL_PASSWORD}@db/x")',
                                  "lineno": 7, "in_app": True}]},
        "pair": (TOKEN, None),
        "uptime_s": 1.5,
        TOKEN: "keys are field names and are kept",
    }
    masked = redact.json(data)
    assert masked == {
        "command": ["app", "--token", MASK],
        "exception": {"frames": [{"context_line": f'c("postgres://{MASK}@db/x")',
                                  "lineno": 7, "in_app": True}]},
        "pair": (MASK, None),
        "uptime_s": 1.5,
        TOKEN: "keys are field names and are kept",
    }
    assert data["command"] == ["app", "--token", TOKEN]  # a copy: the input is unchanged


def test_a_real_crash_with_secrets_in_argv_and_source_is_masked(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    argv = [sys.executable, str(app), f"--token={TOKEN}", "--password", PASSWORD]
    status, tail = run_for_wait_status(argv)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    assert TOKEN in tail and PASSWORD in tail and URL_PASSWORD in tail  # the real thing
    outcome = classify(Ending(exit=ExitStatus.from_wait_status(status), stderr_tail=tail,
                              command=" ".join(argv)))
    assert outcome.traceback is not None
    redact = Redactor.from_environ({}, argv)
    report = redact.json({
        "summary": outcome.summary,
        "command": argv,
        "exception": redact.json(exception_json(outcome)),
        "stderr_tail": tail,
    })
    text = json.dumps(report)
    for secret in (TOKEN, PASSWORD, URL_PASSWORD):
        assert secret not in text, secret
    frames = report["exception"]["frames"]
    assert frames[-1]["context_line"] == (
        "raise ConnectionError(f'cannot reach {url}')")
    assert frames[-2]["context_line"] == f'connect("postgres://{MASK}@db.internal/shop")'
    assert report["command"][2:] == [f"--token={MASK}", "--password", MASK]
    assert f"cannot reach postgres://{MASK}@db.internal/shop" in report["summary"]


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000 + "://" + "b" * 200_000,
        "-" * 400_000,
        "-a " * 100_000,
        "-u x -p " * 50_000,
        "x://u:" + "@" * 400_000,
        "'--password', '" * 20_000,
    ],
    ids=["letters-url", "dashes", "flags", "user-p", "ats", "list-repr"],
)
def test_adversarial_text_is_masked_without_blowing_up(text: str) -> None:
    # Quadratic scanning would not finish; the figures are in bench/ (redact).
    masked = Redactor(["sekret-value"]).text(text)
    assert len(masked) <= len(text) + len(MASK) * (text.count("-p ") + text.count("'") + 1)

"""Env files in the forms people keep, and the child's environment built from one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from supervisor.envfile import (
    MINIMAL_PATH,
    kept_by_clean_env,
    parse_env_file,
    reproduce_environment,
)
from supervisor.errors import UsageError


def write(tmp_path: Path, text: str, name: str = ".env") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_env_file_reads_every_form_people_keep(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        # a comment, then a blank line

        PLAIN=value
        export EXPORTED=yes
        SPACED = around the equals
        EMPTY=
        TRAILING=kept # a comment after a space
        HASH_INSIDE=a#b
        SINGLE='literal $HOME \\n # not a comment'
        DOUBLE="line one\\nline \\"two\\" \\\\ done" # comment
        URL=postgres://user:p@ss@host:5432/db?sslmode=require
        MULTI="first
        second"
          INDENTED=ok
        PLAIN=later wins
        """)
    assert parse_env_file(path) == {
        "PLAIN": "later wins",
        "EXPORTED": "yes",
        "SPACED": "around the equals",
        "EMPTY": "",
        "TRAILING": "kept",
        "HASH_INSIDE": "a#b",
        "SINGLE": "literal $HOME \\n # not a comment",
        "DOUBLE": 'line one\nline "two" \\ done',
        "URL": "postgres://user:p@ss@host:5432/db?sslmode=require",
        "MULTI": "first\nsecond",
        "INDENTED": "ok",
    }


def test_env_file_accepts_crlf_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"\xef\xbb\xbfA=1\r\nB='two'\r\n")
    assert parse_env_file(str(path)) == {"A": "1", "B": "two"}


@pytest.mark.parametrize(("text", "line", "words"), [
    ("A=1\nB=2\nJUST_A_NAME\n", 3, "expected NAME=VALUE"),
    ("A=1\n1BAD=x\n", 2, "is not a variable name"),
    ("A=1\nWITH-DASH=x\n", 2, "is not a variable name"),
    ("A=1\nQ='open\nB=2\n", 2, "never closed"),
    ('A="closed" extra\n', 1, "after the closing quote"),
    ("=value\n", 1, "is not a variable name"),
])
def test_malformed_env_file_names_the_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        parse_env_file(path)
    message = str(caught.value)
    assert message.startswith(f"--env-file: {path} line {line}: ")
    assert words in message
    assert "\n" not in message
    assert caught.value.status == 2


def test_missing_env_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--env-file: .*nope\.env: no such file"):
        parse_env_file(str(tmp_path / "nope.env"))


def test_clean_env_keeps_what_an_image_keeps_and_the_files_variables(tmp_path: Path) -> None:
    values = parse_env_file(write(tmp_path, "DATABASE_URL=sqlite:///x\nexport MODE='prod'\n"))
    base = {"HOME": "/root", "SECRET_ON_LAPTOP": "1", "PATH": "/venv/bin:/usr/bin",
            "VIRTUAL_ENV": "/venv", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "AWS_PROFILE": "laptop", "SUPERVISOR_CLEAN_ENV": "1"}
    env = reproduce_environment(base, values, clean=True)
    assert env == {"DATABASE_URL": "sqlite:///x", "MODE": "prod", "HOME": "/root",
                   "PATH": "/venv/bin:/usr/bin", "VIRTUAL_ENV": "/venv", "LANG": "C.UTF-8",
                   "LC_ALL": "C.UTF-8"}


def test_clean_env_without_any_path_gets_a_minimal_one() -> None:
    assert reproduce_environment({"B": "2"}, {"A": "1"}, clean=True) == {
        "PATH": MINIMAL_PATH, "A": "1"}


def test_the_files_own_path_wins(tmp_path: Path) -> None:
    values = parse_env_file(write(tmp_path, "PATH=/usr/bin:/bin\nA=1\n"))
    assert reproduce_environment({"B": "2", "PATH": "/laptop"}, values, clean=True) == {
        "PATH": "/usr/bin:/bin", "A": "1"}


def test_without_clean_env_the_file_updates_the_environment(tmp_path: Path) -> None:
    values = parse_env_file(write(tmp_path, "A=from file\n"))
    base = {"A": "old", "B": "kept", "PATH": MINIMAL_PATH}
    env = reproduce_environment(base, values, clean=False)
    assert env == {"A": "from file", "B": "kept", "PATH": MINIMAL_PATH}


@pytest.mark.parametrize(("name", "kept"), [
    ("PATH", True), ("HOME", True), ("LANG", True), ("LC_CTYPE", True), ("VIRTUAL_ENV", True),
    ("AWS_SECRET_ACCESS_KEY", False), ("PYTHONPATH", False), ("LCX", False),
])
def test_what_clean_env_keeps(name: str, kept: bool) -> None:
    assert kept_by_clean_env(name) is kept

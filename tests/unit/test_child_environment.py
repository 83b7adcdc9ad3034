"""The supervisor's defaults for a Python child: set where the user gave no value."""

from __future__ import annotations

from supervisor.child import CHILD_ENV_DEFAULTS, child_environment


def test_defaults_are_set_when_unset() -> None:
    env = child_environment({"A": "1"})
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONFAULTHANDLER"] == "1"
    assert env["A"] == "1"


def test_an_empty_value_counts_as_unset_as_python_reads_it() -> None:
    env = child_environment({"PYTHONUNBUFFERED": "", "PYTHONFAULTHANDLER": ""})
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONFAULTHANDLER"] == "1"


def test_the_users_own_value_is_kept() -> None:
    env = child_environment({"PYTHONUNBUFFERED": "0", "PYTHON_COLORS": "1"})
    assert env["PYTHONUNBUFFERED"] == "0" and env["PYTHON_COLORS"] == "1"
    assert set(CHILD_ENV_DEFAULTS) <= set(env)

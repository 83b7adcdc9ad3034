"""The supervisor's own failures, as exceptions that carry an exit status.

A crash of the child is never an exception: it is a value (see ``causes``).
These are for the supervisor's set-up only, caught once in ``__main__``.
"""

from __future__ import annotations


class SupervisorError(Exception):
    """A failure of the supervisor itself; ``status`` is what it exits with."""

    status = 1


class UsageError(SupervisorError):
    """A bad command line or environment value: exit 2 before any child starts."""

    status = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @classmethod
    def bad_value(cls, option: str, value: str, expected: str) -> UsageError:
        return cls(f"{option}: invalid value {value!r}: expected {expected}")

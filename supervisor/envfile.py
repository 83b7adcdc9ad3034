"""The child's environment as a platform would give it: from an env file, or only that.

Owns: parsing a dotenv file (the forms people keep, refused with the file and
line otherwise); building the child's environment from it, with the caller's
variables or (``--clean-env``) only those an image would give too.
Must not know: the loop, the spawn or the supervisor's own defaults for the
child (``child.child_environment`` adds those afterwards).

Cheap to import (no typing, re or dataclasses): it runs before the spawn.
"""

from __future__ import annotations

from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Optional

# What a minimal image (Debian, Alpine, the python images) puts on PATH: given
# when neither the caller nor the file has one.
MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What --clean-env keeps of the caller's variables (and every LC_*): what an
# image sets for every process it runs.
KEPT_BY_CLEAN_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "VIRTUAL_ENV")


# Escapes understood inside double quotes; any other backslash is kept as written.
_DOUBLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(path: str) -> dict[str, str]:
    """The variables of a dotenv file, in the form people keep.

    Understood: blank lines and ``#`` comments; an ``export`` prefix; spaces
    around ``=``; ``KEY=`` for an empty value; single quotes (taken literally);
    double quotes (``\\n``, ``\\t``, ``\\r``, ``\\"``, ``\\\\``, ``\\$`` escapes); quoted
    values spanning several lines; unquoted values ending at `` #`` (a comment).
    ``$VAR`` is not expanded: the file says exactly what the child gets, as
    Docker's ``--env-file`` does. A later line wins over an earlier one.

    Raises ``UsageError`` naming the file and the line for anything else.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UsageError(f"--env-file: {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--env-file: {path}: is a directory, expected a file") from None
    except OSError as exc:
        raise UsageError(f"--env-file: {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"--env-file: {path} line {line}: not valid UTF-8") from None
    # A byte order mark, as some Windows editors write.
    text = text.removeprefix("\ufeff")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    values: dict[str, str] = {}
    index = 0
    while index < len(lines):
        number = index + 1
        name, value, index = _parse_assignment(path, lines, index)
        if name is None:
            continue
        if "\x00" in value:
            raise UsageError(f"--env-file: {path} line {number}: a value cannot hold a NUL byte")
        values[name] = value
    return values


def _parse_assignment(
    path: str, lines: list[str], index: int
) -> tuple[Optional[str], str, int]:
    """(name, value, index of the next line) for the assignment at ``lines[index]``.

    The name is None for a blank or comment line.
    """
    number = index + 1

    def fail(why: str) -> UsageError:
        return UsageError(f"--env-file: {path} line {number}: {why}")

    line = lines[index].strip()
    if not line or line.startswith("#"):
        return None, "", index + 1
    if line.startswith("export") and line[6:7] in (" ", "\t"):
        line = line[6:].lstrip()
    name, equals, rest = line.partition("=")
    name = name.strip()
    if not equals:
        raise fail("expected NAME=VALUE")
    if not _is_name(name):
        raise fail(f"{name!r} is not a variable name (letters, digits and _, not first a digit)")
    rest = rest.lstrip()
    if not rest or rest[0] not in "'\"":
        return name, _strip_comment(rest).rstrip(), index + 1
    quote = rest[0]
    body = rest[1:]
    pieces: list[str] = []
    while True:
        end = _closing_quote(body, quote)
        if end >= 0:
            pieces.append(body[:end])
            after = body[end + 1 :].strip()
            if after and not after.startswith("#"):
                raise fail(f"unexpected text after the closing quote: {after!r}")
            break
        # The value goes on over the next line.
        pieces.append(body + "\n")
        index += 1
        if index >= len(lines):
            raise fail(f"the quoted value is never closed (missing {quote})")
        body = lines[index]
    raw = "".join(pieces)
    value = raw if quote == "'" else _unescape_double(raw)
    return name, value, index + 1


def _is_name(name: str) -> bool:
    """A portable variable name: ASCII letters, digits and _, not first a digit."""
    return (
        bool(name)
        and name.isascii()
        and not name[0].isdigit()
        and all(c.isalnum() or c == "_" for c in name)
    )


def _strip_comment(value: str) -> str:
    """An unquoted value up to a comment: a # after whitespace, as in a shell."""
    for i in range(1, len(value)):
        if value[i] == "#" and value[i - 1].isspace():
            return value[:i]
    return value


def _closing_quote(text: str, quote: str) -> int:
    """Index of the quote that closes ``text``, or -1; backslash escapes only in double quotes."""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and quote == '"':
            i += 2
            continue
        if char == quote:
            return i
        i += 1
    return -1


def _unescape_double(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in _DOUBLE_ESCAPES:
            out.append(_DOUBLE_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def kept_by_clean_env(name: str) -> bool:
    """Whether ``--clean-env`` keeps the caller's ``name``: what an image gives every process.

    A platform runs the container with the image's environment (its PATH, a
    venv's VIRTUAL_ENV, HOME, the locale) plus the service's variables: never
    with nothing. Everything else the caller has is the laptop's, not the
    platform's.
    """
    return name in KEPT_BY_CLEAN_ENV or name.startswith("LC_")


def reproduce_environment(
    base: Mapping[str, str], file_values: Mapping[str, str], clean: bool
) -> dict[str, str]:
    """The child's environment: ``base`` updated with the file's variables.

    With ``clean``, only what an image keeps of ``base`` (``kept_by_clean_env``)
    and the file. Without a PATH anywhere a minimal one is given, so that the command can be
    found. The supervisor's own defaults (PYTHONUNBUFFERED and friends) are
    added later by ``child.child_environment``.
    """
    if clean:
        env = {name: value for name, value in base.items() if kept_by_clean_env(name)}
    else:
        env = dict(base)
    env.update(file_values)
    env.setdefault("PATH", MINIMAL_PATH)
    return env

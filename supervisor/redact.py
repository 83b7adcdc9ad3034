"""Masking of secrets in anything the supervisor writes out.

Owns: deciding what looks secret, and one ``Redactor`` that masks it in text,
in an argv, and in every string of a JSON-like value (a whole report dict at
once). What looks secret:

* values of environment variables whose names look secret (``DB_PASSWORD``);
* values given to flags whose names look secret, in the child's argv and in
  any text: ``--token=X``, ``--token X``, ``--password X``, ``--api-key X``,
  and ``-p X`` only after a user flag (``-u root -p X``, as mysql takes it;
  psql's ``-p`` is a port). Values found in the argv are then masked wherever
  they appear, so an app printing its own ``sys.argv`` leaks nothing;
* ``user:password@`` in any URL, anywhere (source lines of a traceback too).

Every pattern is anchored on a character that must be there (``://``, a
dash) and has bounded repetitions, so that adversarial text (a 100 MB line
of letters or dashes) costs linear time.
Must not know: where the text goes. Values of the environment are never sent
anywhere; this only protects against the app printing one.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional, Sequence

SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|DSN|AUTH|CREDENTIAL|PRIVATE", re.IGNORECASE
)
MASK = "[redacted]"
# Shorter values ("1", "true") would mask unrelated text everywhere.
MIN_SECRET_LENGTH = 4
# user:password@ in URLs, whatever variable they came from. Every repetition is
# bounded and the scheme cannot start inside a word: a 100 MB line of letters
# must cost linear time, not quadratic. The password may hold an unescaped "@"
# (the last "@" before the host ends it); ":password@" alone is Redis's form.
URL_CREDENTIALS = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)"
    r"(?:[^/\s:@?#\"'<>]{1,256}(?::[^/\s?#\"'<>]{0,256})?|:[^/\s?#\"'<>]{1,256})@"
)

# A flag's name (dashes stripped, lower case, "_" as "-") that takes a secret.
_SECRET_WORDS = frozenset({
    "token", "password", "passwd", "passphrase", "pass", "pwd", "secret", "secrets",
    "apikey", "credential", "credentials", "dsn", "auth", "key",
})
_SECRET_PAIRS = frozenset({
    ("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key"),
    ("auth", "token"), ("access", "token"), ("client", "secret"),
})
# Flags that name where a secret is, or what kind, not the secret itself.
_NOT_A_VALUE = frozenset({
    "file", "path", "dir", "mode", "type", "method", "url", "name", "env", "timeout", "ttl",
})
_USER_FLAGS = frozenset({"-u", "--user", "--username"})
_PYTHON = re.compile(r"python[0-9.]*$")

# Between a flag and its value: "=", blanks, or the quote-comma-quote of a
# printed list (``['--password', 'x']``, ``["--token", "x"]``).
_SEP = r"(?:=|[ \t]{1,16}|['\"],[ \t]{0,4}['\"])"
# A value: quoted, or up to a blank, quote or comma. After a blank it may not
# start with a dash (that is the next flag).
_VALUE = r"(?:\"[^\"\n]{1,256}\"|[^\s'\",]{1,256})"
FLAG_VALUE = re.compile(
    r"(?<![\w.-])(?P<flag>--?[A-Za-z][A-Za-z0-9_-]{0,63})"
    r"(?:(?P<eq>=)(?P<value_eq>" + _VALUE + r")"
    r"|(?P<sep>" + _SEP + r")(?P<value>(?!-)" + _VALUE + r"))"
)
USER_THEN_P = re.compile(
    r"(?<![\w.-])(?P<user>(?:-u|--user|--username)" + _SEP + r"?[^\s'\",]{1,256}"
    + _SEP + r"-p)(?:(?P<sep>" + _SEP + r")(?!-)|(?=[^\s'\",=]))(?P<value>" + _VALUE + r")"
)


def is_secret_flag(flag: str) -> bool:
    """Whether ``--flag VALUE`` gives a secret: ``--token``, ``--db-password``, ``--api-key``."""
    name = flag.lstrip("-").lower().replace("_", "-")
    if len(flag) - len(name) != 2 or not name:  # single-dash flags are too ambiguous
        return False
    words = [word for word in name.split("-") if word]
    if not words or words[0] == "no" or words[-1] in _NOT_A_VALUE:
        return False
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


def secrets_in_argv(argv: Sequence[str]) -> list[str]:
    """The values that ``argv`` gives to secret-looking flags."""
    return [secret for _, secret in _scan_argv(argv) if secret]


def _is_user_flag(arg: str) -> bool:
    """``-u NAME``, ``-uNAME``, ``--user NAME``, ``--user=NAME``, ``--username ...``."""
    if arg in _USER_FLAGS or arg.partition("=")[0] in _USER_FLAGS:
        return True
    return arg.startswith("-u") and not arg.startswith("--")


def _scan_argv(argv: Sequence[str]) -> list[tuple[str, str]]:
    """Each argument as it may be shown, with the secret it held ("" when none)."""
    scanned: list[tuple[str, str]] = []
    after_user = False
    previous = ""
    # ``python -u app.py -p 8080``: the interpreter's -u is not a user flag.
    interpreter = _PYTHON.match(argv[0].rpartition("/")[2]) is not None if argv else False
    for index, arg in enumerate(argv):
        if interpreter and index > 0 and not arg.startswith("-"):
            interpreter = False
        flag, equals, value = arg.partition("=")
        if arg.startswith("--") and equals and is_secret_flag(flag):
            scanned.append((f"{flag}={MASK}", value))
        elif not arg.startswith("-") and (
            is_secret_flag(previous) or (after_user and previous == "-p")
        ):
            scanned.append((MASK, arg))
        elif after_user and arg.startswith("-p") and len(arg) > 2 and not arg.startswith("--"):
            scanned.append(("-p" + MASK, arg[2:]))  # mysql's -pSECRET
        else:
            scanned.append((arg, ""))
        after_user = after_user or (not interpreter and _is_user_flag(arg))
        previous = arg
    return scanned


class Redactor:
    """Replaces known secret values (longest first), flag values and URL credentials."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], argv: Sequence[str] = ()
    ) -> Redactor:
        """Secrets from the environment's secret-looking names and the argv's secret flags."""
        secrets = [value for name, value in environ.items() if SECRET_NAME.search(name)]
        return cls([*secrets, *secrets_in_argv(argv)])

    def text(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if "://" in text:
            text = URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", text)
        if "-" in text:
            if "-p" in text:
                text = USER_THEN_P.sub(_mask_user_then_p, text)
            text = FLAG_VALUE.sub(_mask_flag_value, text)
        return text

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` with every secret value masked, the flags kept for reading."""
        return [self.text(shown) for shown, _ in _scan_argv(argv)]

    def json(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string in it masked (keys kept)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {key: self.json(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.json(item) for item in value)
        return value


def _mask_flag_value(match: re.Match[str]) -> str:
    flag = match.group("flag")
    if not is_secret_flag(flag):
        return match.group(0)
    if match.group("eq") is not None:
        return f"{flag}={_masked_like(match.group('value_eq'))}"
    return f"{flag}{match.group('sep')}{_masked_like(match.group('value'))}"


def _mask_user_then_p(match: re.Match[str]) -> str:
    separator: Optional[str] = match.group("sep")
    return f"{match.group('user')}{separator or ''}{_masked_like(match.group('value'))}"


def _masked_like(value: str) -> str:
    """The mask, keeping the value's quotes so that the text still reads."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return f'"{MASK}"'
    return MASK

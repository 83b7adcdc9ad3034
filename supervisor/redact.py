"""Masking of secrets in anything the supervisor writes out.

Owns: deciding which environment variables look secret and replacing their
values wherever they appear (stderr tail, command, messages, attachments).
Must not know: where the text goes. Values of the environment are never sent
anywhere; this only protects against the app printing one.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|DSN|AUTH|CREDENTIAL|PRIVATE", re.IGNORECASE
)
MASK = "[redacted]"
# Shorter values ("1", "true") would mask unrelated text everywhere.
MIN_SECRET_LENGTH = 4
# user:password@ in URLs, whatever variable they came from. Every repetition is
# bounded and the scheme cannot start inside a word: a 100 MB line of letters
# must cost linear time, not quadratic.
URL_CREDENTIALS = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)"
    r"[^/\s:@]{1,256}(:[^/\s@]{0,256})?@"
)


class Redactor:
    """Replaces known secret values, longest first, with a fixed mask."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Redactor:
        return cls(value for name, value in environ.items() if SECRET_NAME.search(name))

    def text(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if "://" not in text:
            return text
        return URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", text)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [self.text(arg) for arg in argv]

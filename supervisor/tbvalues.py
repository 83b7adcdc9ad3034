"""The values a parsed traceback is made of: frames, exceptions, the traceback.

Owns: ``Frame`` (and whether it is the app's own code, and its module),
``ParsedException``, ``ParsedTraceback`` (its summary and innermost app frame).
Must not know: how they were parsed (``tracebacks``, ``richtb``, ``faultdump``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

_STDLIB_DIR = re.compile(r"[/\\]lib(?:64)?[/\\]python\d+(?:\.\d+)?t?[/\\]")
_THIRD_PARTY_DIRS = ("/site-packages/", "/dist-packages/")
_STDLIB_PREFIXES = tuple(
    f"{root}/{lib}/python{sys.version_info[0]}.{sys.version_info[1]}/"
    for root in sorted({sys.base_prefix, sys.prefix})
    for lib in ("lib", "lib64")
)
_SOURCE_SUFFIXES = (".py", ".pyw", ".pyx")


@dataclass(frozen=True)
class Frame:
    """One frame as printed. `function` is "" for the place a SyntaxError points at."""

    filename: str
    lineno: Optional[int]
    function: str
    context_line: Optional[str]

    def is_app(self) -> bool:
        """Whether the frame is the app's own code, not Python's or an installed package's."""
        name = self.filename.replace("\\", "/")
        if name.startswith("<") and name.endswith(">"):
            return False
        if any(part in name for part in _THIRD_PARTY_DIRS):
            return False
        if _STDLIB_DIR.search(name):
            return False
        if "/bin/" in name and not name.endswith(_SOURCE_SUFFIXES):
            # A console script's wrapper (/usr/local/bin/uvicorn): installed, not written.
            return False
        return not name.startswith(_STDLIB_PREFIXES)

    @property
    def module(self) -> Optional[str]:
        """The dotted module name, when the path says it; None for the app's absolute paths."""
        name = self.filename.replace("\\", "/")
        if name.startswith("<frozen ") and name.endswith(">"):
            return name[len("<frozen ") : -1].strip() or None
        if name.startswith("<"):
            return None
        root = max(name.rfind(part) + len(part) - 1 for part in _THIRD_PARTY_DIRS)
        stdlib = _STDLIB_DIR.search(name)
        if root >= len("/site-packages/") - 1:
            relative = name[root + 1 :]
        elif stdlib is not None:
            relative = name[stdlib.end() :]
        elif not name.startswith("/") and ".." not in name.split("/"):
            # A relative path is relative to the directory the child was started in.
            relative = name
        else:
            return None
        return _dotted(relative)


@dataclass(frozen=True)
class ParsedException:
    """One exception: `type` as printed (dotted when not a builtin), frames oldest first."""

    type: str
    value: str
    frames: Tuple[Frame, ...]
    group: Tuple[ParsedException, ...] = ()


@dataclass(frozen=True)
class ParsedTraceback:
    """The exception that ended the program and, oldest first, those chained before it."""

    exception: ParsedException
    chain: Tuple[ParsedException, ...]

    def innermost_app_frame(self) -> Optional[Frame]:
        for exc in (self.exception, *reversed(self.chain)):
            frame = _innermost_app_frame(exc)
            if frame is not None:
                return frame
        return None

    def summary(self) -> str:
        return _summary(self.exception)


def _innermost_app_frame(exception: ParsedException) -> Optional[Frame]:
    # A group's sub-exceptions were raised below the frames of the group itself.
    for sub in exception.group:
        frame = _innermost_app_frame(sub)
        if frame is not None:
            return frame
    for frame in reversed(exception.frames):
        if frame.is_app():
            return frame
    return None


def _summary(exception: ParsedException) -> str:
    first_line = exception.value.split("\n", 1)[0].strip()
    return f"{exception.type}: {first_line}" if first_line else exception.type


def _dotted(relative: str) -> Optional[str]:
    for suffix in _SOURCE_SUFFIXES:
        if relative.endswith(suffix):
            relative = relative[: -len(suffix)]
            break
    else:
        return None
    parts = [part for part in relative.split("/") if part and part != "."]
    if parts and parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)

"""Reading a traceback that rich drew as a box (typer, fastapi-cli, ``rich.traceback``).

Owns: the boxed form rich prints for an uncaught exception: one panel titled
"Traceback (most recent call last)" per exception, frames as
``path:line in function`` headers (wrapped over as many lines as the box
needs), the source around each frame with ``❱`` on the failing line, the
exception's ``Type: value`` under the panel, and the chain markers between
panels. What it gives back is the same value ``tracebacks`` gives for the
plain form, so the rest of the supervisor does not know which it was.
Must not know: where the text came from. Pure functions over lines (ANSI
codes already removed) that never raise.

rich prints a frame's path only when the file exists; frames of frozen
modules read ``in _find_and_load:1176`` and have no file.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from .tracebacks import CHAIN_MARKERS, Frame, ParsedException, ParsedTraceback

_TOP, _SIDE, _BOTTOM = "╭", "│", "╰"
_TITLE = "Traceback"
_MARKER = "❱"
_HEADER = re.compile(r"(?P<file>.+):(?P<line>\d{1,12}) ?in ?(?P<func>\S.*)$")
_FROZEN = re.compile(r"in (?P<func>[\w<>.]+):(?P<line>\d{1,12})$")
# The failing source line: "❱ 521 │   _run(" (the bars are indent guides).
_NUMBERED = re.compile(r"❱\s*\d+ (.*)$")
_EXCEPTION = re.compile(r"(?P<type>[A-Za-z_][\w.<>]*)(?:: (?P<value>.*))?$")
# A log record after the message: "INFO:     ...", "[2024-05-01 10:00:00 +0000] ...".
_LOG = re.compile(r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)[:\s]|\[(?!NOTE\])")
# The most lines one panel may span (a deep stack with source is long, not endless).
_MAX_PANEL_LINES = 20000

# (first line, line after, the traceback)
Found = Tuple[int, int, ParsedTraceback]


def find_rich_tracebacks(lines: Sequence[str]) -> List[Found]:
    """Every boxed traceback in ``lines``, with its chained panels joined, in order."""
    found: List[Found] = []
    i = 0
    while i < len(lines):
        if not _is_title(lines[i]):
            i += 1
            continue
        start = i
        sections: List[ParsedException] = []
        while True:
            exception, i = _section(lines, i)
            if exception is None:
                break
            sections.append(exception)
            marker = _skip_blank(lines, i)
            if marker >= len(lines) or lines[marker].strip() not in CHAIN_MARKERS:
                break
            following = _skip_blank(lines, marker + 1)
            if following >= len(lines) or not _is_title(lines[following]):
                break
            i = following
        if sections:
            found.append((start, i, ParsedTraceback(sections[-1], tuple(sections[:-1]))))
        i = max(i, start + 1)
    return found


def _is_title(line: str) -> bool:
    column = line.find(_TOP)
    return column >= 0 and _TITLE in line[column:] and "most recent call last" in line


def _section(lines: Sequence[str], i: int) -> Tuple[Optional[ParsedException], int]:
    """One panel and the exception under it; the index after them either way."""
    column = lines[i].find(_TOP)
    contents: List[str] = []
    j = i + 1
    while j < len(lines) and j - i < _MAX_PANEL_LINES:
        line = lines[j]
        if line[column : column + 1] == _BOTTOM:
            break
        if line[column : column + 1] != _SIDE:
            return None, j  # not a panel after all (cut off, or interleaved)
        inner = line[column + 1 :]
        end = inner.rfind(_SIDE)
        contents.append((inner[:end] if end >= 0 else inner)[1:].rstrip())
        j += 1
    else:
        return None, j
    j = _skip_panel(lines, _skip_blank(lines, j + 1))  # a SyntaxError's own panel
    if j >= len(lines):
        return None, j
    match = _EXCEPTION.match(lines[j][column:].rstrip())
    if match is None:
        return None, j
    width = len(lines[i].rstrip()) - column
    value, j = _value(lines, j + 1, match.group("value") or "", width,
                      len(lines[j].rstrip()) - column)
    return ParsedException(match.group("type"), value, tuple(_frames(contents))), j


def _skip_panel(lines: Sequence[str], j: int) -> int:
    if j < len(lines) and lines[j].lstrip().startswith(_TOP) and not _is_title(lines[j]):
        column = lines[j].find(_TOP)
        while j < len(lines) and lines[j][column : column + 1] != _BOTTOM:
            j += 1
        return _skip_blank(lines, j + 1)
    return j


def _value(lines: Sequence[str], i: int, first: str, width: int, previous: int
           ) -> Tuple[str, int]:
    """The message, with its ``[NOTE]`` lines, unwrapped where rich wrapped it at ``width``.

    A line break is rich's own when the next line's first word would not have
    fitted on the line before; otherwise it was in the message.
    """
    value = first.rstrip()
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped or stripped in CHAIN_MARKERS or _TOP in line or _LOG.match(stripped):
            break
        text = line.rstrip()
        wrapped = previous + 1 + len(text.split(" ", 1)[0]) > width
        value += (" " if wrapped else "\n") + text
        previous = len(text)
        i += 1
    return value, i


def _frames(contents: Sequence[str]) -> List[Frame]:
    """The frames of one panel: a header paragraph each, then the source under it."""
    frames: List[Frame] = []
    header: List[str] = []
    pending: Optional[Tuple[str, int, str]] = None
    context: Optional[str] = None

    def flush(new: Optional[Tuple[str, int, str]]) -> None:
        nonlocal pending, context
        if pending is not None:
            frames.append(Frame(pending[0], pending[1], pending[2], context))
        pending, context = new, None

    for text in contents:
        if not text or text[0] in " │╭╰" or text.startswith(_MARKER):
            if header:
                flush(_header("".join(header)))
                header = []
            if text.startswith(_MARKER) and pending is not None and context is None:
                code = _NUMBERED.match(text)
                context = code.group(1).lstrip(" " + _SIDE).rstrip() or None if code else None
        elif not header and _FROZEN.match(text):
            flush(_header(text))
        else:
            header.append(text)
    if header:
        flush(_header("".join(header)))
    flush(None)
    return frames


def _header(text: str) -> Optional[Tuple[str, int, str]]:
    frozen = _FROZEN.match(text)
    if frozen is not None:
        return "<unknown>", int(frozen.group("line")), frozen.group("func")
    match = _HEADER.match(text)
    if match is None:
        return None
    return match.group("file"), int(match.group("line")), match.group("func").strip()


def _skip_blank(lines: Sequence[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i

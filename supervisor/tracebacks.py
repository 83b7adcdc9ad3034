"""Reading why a Python child died out of the text it left on stderr.

Owns: finding, in the tail of a child's stderr, the traceback that ended the
program (its type, message and frames, chained exceptions, the top levels of an
exception group), in the formats CPython 3.9 to 3.13 print, as servers relay
them, and as rich draws them (``richtb``). faulthandler's dump is ``faultdump``'s.
Must not know: where the text came from, how the child ended, or what is done
with the result. Pure functions over strings: they never raise, whatever the
input, and their work grows with the length of the text, not faster.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import List, NamedTuple, Optional, Sequence, Tuple

from .tbvalues import Frame, ParsedException, ParsedTraceback

__all__ = ["CHAIN_MARKERS", "FATAL_PREFIX", "Found", "Frame", "ParsedException",
           "ParsedTraceback", "find_fatal_traceback", "find_tracebacks", "is_server_halt",
           "split_lines"]

# CPython stops printing nested groups at depth 10; deeper input is not its output.
MAX_GROUP_DEPTH = 12

_TRACEBACK = "Traceback (most recent call last):"
_GROUP_TRACEBACK = "+ Exception Group Traceback (most recent call last):"
CHAIN_MARKERS = frozenset(
    {
        "The above exception was the direct cause of the following exception:",
        "During handling of the above exception, another exception occurred:",
    }
)
FATAL_PREFIX = "Fatal Python error: "
# A rich panel's top border: the boxed form is looked for only where one is drawn.
_RICH_TITLE = "╭"
# Exceptions a server raises to stop itself after a worker failed: not the app's.
_SERVER_HALTS = frozenset({"HaltServer"})

# CSI sequences (colours, cursor moves) and the two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# Line numbers are capped in length: int() refuses very long digit strings.
_FRAME = re.compile(r'\s*File "(?P<file>.*)", line (?P<line>\d{1,12}), in (?P<func>.*)$')
# Where a SyntaxError points: no function, since the code never ran.
_LOCATION = re.compile(r'\s*File "(?P<file>.*)", line (?P<line>\d{1,12})\s*$')
_EXCEPTION = re.compile(r"(?P<type>[A-Za-z_][\w.<>]*)(?::(?: (?P<value>.*))?)?$")
# Log records interleaved with (or following) a traceback: uvicorn's "ERROR:    ",
# logging's "WARNING:root:", gunicorn's "[2024-05-01 10:00:00 +0000]".
_LOG_RECORD = re.compile(
    r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL|TRACE)[:\s]|\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d"
)
# Messages that servers log before a traceback they caught and survived.
_HANDLED_INTRODUCERS = re.compile(
    r"Exception in ASGI application|Exception in callback|Exception in thread"
    r"|Exception ignored|Task exception was never retrieved"
    r"|Future exception was never retrieved|Unhandled error in exception handler"
    r"|Error in atexit|Error in ASGI Framework|Error handling request"
)
# Lines looked at above a traceback for such a message (asyncio puts a "handle:" line between).
_INTRODUCER_LOOKBACK = 3
# The most margin-less lines 3.11/3.12 print inside an exception group for one message.
_MAX_BARE_GROUP_LINES = 64
_GROUP_ITEM = re.compile(r"( *)([|+])(.*)$")
_GROUP_SEPARATOR = re.compile(r"-+ (?:\d+|\.\.\.) -+\s*$")
_CARETS = re.compile(r"\s*[\^~]+\s*$")

def find_fatal_traceback(text: str) -> Optional[ParsedTraceback]:
    """The last traceback in `text` that ended the program, None if there is none.

    Tracebacks that a server logged after a failed request or callback and then
    carried on are skipped: they are not why the program stopped. So is a
    server's own halt (gunicorn's HaltServer) when the app's exception came before.
    """
    fatal: Optional[ParsedTraceback] = None
    halt: Optional[ParsedTraceback] = None
    for found in find_tracebacks(split_lines(text)):
        if found.handled:
            continue
        if is_server_halt(found.traceback):
            halt = found.traceback
        else:
            fatal = found.traceback
    return fatal or halt


def is_server_halt(traceback: ParsedTraceback) -> bool:
    """A server stopping itself after a worker failed (the app's exception came before)."""
    return traceback.exception.type.rpartition(".")[2] in _SERVER_HALTS


class Found(NamedTuple):
    """One traceback in a list of lines: where, what, and how it was introduced."""

    start: int  # its first line
    end: int  # the line after it
    traceback: ParsedTraceback
    handled: bool  # a server logged it and carried on
    logged: bool  # a log record introduced it (logger.exception), not the interpreter's exit


def find_tracebacks(lines: Sequence[str]) -> List[Found]:
    """Every traceback in `lines` (plain or drawn by rich), in order."""
    found = [Found(start, end, traceback, handled, _logged(lines, start))
             for start, end, traceback, handled in _scan(lines, depth=0)]
    if any(_RICH_TITLE in line for line in lines):
        from .richtb import find_rich_tracebacks

        for start, end, traceback in find_rich_tracebacks(lines):
            found.append(Found(start, end, traceback, _introduced_as_handled(lines, 0, start),
                               _logged(lines, start)))
        found.sort(key=lambda item: item.start)
    return found


def _logged(lines: Sequence[str], start: int) -> bool:
    """Whether a log record introduced the traceback at `start` (gunicorn's worker
    failure excepted: it logs, then the worker exits)."""
    above = next((lines[i] for i in range(start - 1, max(-1, start - 3), -1)
                  if lines[i].strip()), "")
    header = lines[start]
    prefix = header[: header.find(_TRACEBACK)] if _TRACEBACK in header else ""
    introducer = prefix if prefix.strip() else above
    if "Exception in worker process" in introducer:
        return False
    return _LOG_RECORD.match(introducer.strip()) is not None


def split_lines(text: str) -> List[str]:
    text = _ANSI.sub("", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


# -- tracebacks ---------------------------------------------------------------------------

# Where it starts and ends, the traceback, and whether it was logged as handled.
_Found = Tuple[int, int, ParsedTraceback, bool]


def _scan(lines: Sequence[str], depth: int) -> List[_Found]:
    """Every traceback in `lines`, with chained sections joined, in order."""
    found: List[_Found] = []
    i = 0
    previous_end = 0
    while i < len(lines):
        kind = _start_kind(lines[i], depth)
        if kind is None:
            i += 1
            continue
        start = i
        sections: List[ParsedException] = []
        resume = start + 1
        while True:
            exception, end = _parse_section(lines, i, kind, depth)
            if exception is None:
                resume = max(resume, end)
                break
            sections.append(exception)
            resume = end
            chained = _chained_start(lines, end, depth)
            if chained is None:
                break
            i, kind = chained
        i = resume
        if sections:
            traceback = ParsedTraceback(sections[-1], tuple(sections[:-1]))
            found.append((start, resume, traceback,
                          _introduced_as_handled(lines, previous_end, start)))
            previous_end = resume
    return found


def _start_kind(line: str, depth: int) -> Optional[str]:
    stripped = line.rstrip()
    if stripped.endswith(_TRACEBACK):
        if stripped.endswith(_GROUP_TRACEBACK) and depth < MAX_GROUP_DEPTH:
            return "group"
        return "header"
    # A frame with no header above it: a script's own SyntaxError, or a tail that
    # began in the middle of a traceback.
    if 'File "' in line and (_FRAME.match(line) or _LOCATION.match(line)):
        return "frames"
    return None


def _chained_start(lines: Sequence[str], end: int, depth: int) -> Optional[Tuple[int, str]]:
    marker = _skip_blank(lines, end)
    if marker >= len(lines) or lines[marker].strip() not in CHAIN_MARKERS:
        return None
    start = _skip_blank(lines, marker + 1)
    if start >= len(lines):
        return None
    kind = _start_kind(lines[start], depth)
    return None if kind is None else (start, kind)


def _skip_blank(lines: Sequence[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _introduced_as_handled(lines: Sequence[str], previous_end: int, start: int) -> bool:
    header = lines[start]
    prefix = header[: header.find(_TRACEBACK)] if _TRACEBACK in header else ""
    if _HANDLED_INTRODUCERS.search(prefix):
        return True
    seen = 0
    i = start - 1
    while i >= previous_end and seen < _INTRODUCER_LOOKBACK:
        if lines[i].strip():
            if _HANDLED_INTRODUCERS.search(lines[i]):
                return True
            seen += 1
        i -= 1
    return False


def _parse_section(
    lines: Sequence[str], i: int, kind: str, depth: int
) -> Tuple[Optional[ParsedException], int]:
    """One exception from its header (or first frame) on; the index after it either way."""
    if kind == "group":
        return _parse_group(lines, i, depth + 1)
    return _parse_frames(lines, i + 1 if kind == "header" else i)


def _parse_frames(lines: Sequence[str], i: int) -> Tuple[Optional[ParsedException], int]:
    frames: List[Frame] = []
    while i < len(lines):
        line = lines[i]
        call = _FRAME.match(line) if 'File "' in line else None
        where = _LOCATION.match(line) if call is None and 'File "' in line else None
        match = call or where
        if match is not None:
            context, i = _read_source(lines, i + 1, _indent(line))
            function = call.group("func").strip() if call is not None else ""
            frames.append(Frame(match.group("file"), int(match.group("line")), function, context))
            continue
        if not line.strip() or line.rstrip().endswith(_TRACEBACK) or FATAL_PREFIX in line:
            return None, i
        if line[0].isspace() or _LOG_RECORD.match(line):
            # "[Previous line repeated N more times]", or a line another writer slipped in.
            i += 1
            continue
        exception = _EXCEPTION.match(line)
        if exception is None:
            return None, i
        value, i = _read_value(lines, i + 1, exception.group("value") or "")
        return ParsedException(exception.group("type"), value, tuple(frames)), i
    return None, i


def _read_source(lines: Sequence[str], i: int, frame_indent: int) -> Tuple[Optional[str], int]:
    """The source shown under a frame; 3.11+ adds caret lines, 3.13 whole multi-line calls."""
    context: Optional[str] = None
    while i < len(lines):
        line = lines[i]
        if not line.strip() or _indent(line) <= frame_indent:
            break
        if line.lstrip().startswith(("[Previous line repeated", 'File "')):
            break
        if context is None and not _CARETS.match(line):
            context = line.strip()
        i += 1
    return context, i


def _read_value(lines: Sequence[str], i: int, first: str) -> Tuple[str, int]:
    """A message with the lines that continue it (multi-line messages, 3.11+ notes).

    gunicorn prints the message once more after the traceback: a repeat of the
    first lines at the end is dropped.
    """
    value = [first]
    while i < len(lines) and not _ends_value(lines[i]):
        value.append(lines[i])
        i += 1
    for size in range(len(value) // 2, 0, -1):
        if value[-size:] == value[:size]:
            del value[-size:]
            break
    return "\n".join(value), i


def _ends_value(line: str) -> bool:
    stripped = line.strip()
    return (
        not stripped
        or stripped.endswith(_TRACEBACK)
        or stripped in CHAIN_MARKERS
        or FATAL_PREFIX in line
        or _LOG_RECORD.match(line) is not None
        or ('File "' in line and _FRAME.match(line) is not None)
    )


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# -- exception groups ---------------------------------------------------------------------

_Item = Tuple[int, str, str]  # margin column, "|" or "+", the rest of the line


def _parse_group(lines: Sequence[str], i: int, depth: int) -> Tuple[Optional[ParsedException], int]:
    """A 3.11+ exception group block: "+ Exception Group Traceback" down to its last line.

    Every line carries a margin ("|" or "+") two columns further right per level;
    the header may carry a log prefix, so the margin is measured on the next line.
    """
    first = _GROUP_ITEM.match(lines[i + 1]) if i + 1 < len(lines) else None
    if first is None:
        return None, i + 1
    base = len(first.group(1))
    items: List[_Item] = []
    j = i + 1
    while j < len(lines):
        item = _group_item(lines[j], base)
        if item is not None:
            items.append(item)
            j += 1
            continue
        # 3.11 and 3.12 print the later lines of a multi-line message without a margin.
        resume = _next_group_item(lines, j, base) if items and items[-1][1] == "|" else None
        if resume is None:
            break
        column = items[-1][0]
        items.extend((column, "|", " " + lines[k]) for k in range(j, resume))
        j = resume
    return _build_group_node(items, 0, depth, top=True), j


def _group_item(line: str, base: int) -> Optional[_Item]:
    match = _GROUP_ITEM.match(line)
    if match is None:
        return None
    column = len(match.group(1)) - base
    if column < 0 or column % 2:
        return None
    return column, match.group(2), match.group(3)


def _next_group_item(lines: Sequence[str], j: int, base: int) -> Optional[int]:
    for k in range(j, min(len(lines), j + _MAX_BARE_GROUP_LINES)):
        if not lines[k].strip():
            return None
        if _group_item(lines[k], base) is not None:
            return k
    return None


def _build_group_node(
    items: Sequence[_Item], column: int, depth: int, top: bool
) -> Optional[ParsedException]:
    """The exception whose own lines sit at `column`, with its sub-exceptions if a group."""
    own: List[str] = [_TRACEBACK] if top else []
    subs: List[List[_Item]] = []
    current: Optional[List[_Item]] = None
    for item in items:
        item_column, margin, rest = item
        if margin == "+":
            # "+-+---- 1 ----" opens the first sub-exception one level right of its own
            # "+"; "+---- 2 ----" and the closing "+-------" sit at the sub-exceptions' level.
            level = item_column + 2 if rest.startswith("-+") else item_column
            if level == column + 2:
                if _is_numbered(rest):
                    current = []
                    subs.append(current)
                else:
                    current = None
                continue
        if current is not None:
            current.append(item)
        elif margin == "|" and item_column == column:
            own.append(rest[1:] if rest.startswith(" ") else rest)
    exception = _own_exception(own, depth)
    if exception is None or not subs:
        return exception
    group: List[ParsedException] = []
    if depth < MAX_GROUP_DEPTH:
        for sub in subs:
            parsed = _build_group_node(sub, column + 2, depth + 1, top=False)
            if parsed is not None:
                group.append(parsed)
    return replace(exception, group=tuple(group))


def _is_numbered(rest: str) -> bool:
    return _GROUP_SEPARATOR.match(rest[2:] if rest.startswith("-+") else rest) is not None


def _own_exception(lines: Sequence[str], depth: int) -> Optional[ParsedException]:
    found = _scan(lines, depth)
    if found:
        return found[-1][2].exception
    # A sub-exception that was never raised has no traceback, only its last line.
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        match = _EXCEPTION.match(line)
        if match is None or _LOG_RECORD.match(line):
            return None
        value, _ = _read_value(lines, i + 1, match.group("value") or "")
        return ParsedException(match.group("type"), value, ())
    return None

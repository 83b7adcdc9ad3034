"""Reading faulthandler's dump of a fatal error out of a child's stderr.

Owns: the dump ``faulthandler`` prints on a fatal signal (or SIGABRT after
the startup timeout): the error line, the thread that faulted and the
others, in the formats CPython 3.9 to 3.13 print.
Must not know: where the text came from or what is done with the result.
A pure function over a string that never raises, whatever the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .tracebacks import FATAL_PREFIX, Frame, ParsedException, split_lines

FATAL_ERROR_TYPE = "FatalError"

_FAULT_FRAME = re.compile(
    r'\s*File "(?P<file>.*)", line (?P<line>\d{1,12}|\?\?\?) in (?P<func>.*)$'
)
_THREAD = re.compile(
    r"(?P<which>Current thread|Thread) 0x[0-9a-fA-F]+.*\(most recent call first\):\s*$"
)
_STACK = "Stack (most recent call first):"


@dataclass(frozen=True)
class FaulthandlerDump:
    """faulthandler's report of a fatal error; every stack is oldest first."""

    error: str
    current_thread: Tuple[Frame, ...]
    other_threads: Tuple[Tuple[Frame, ...], ...]

    def innermost_app_frame(self) -> Optional[Frame]:
        # Only the thread that faulted: another thread's code did not cause the signal.
        for frame in reversed(self.current_thread):
            if frame.is_app():
                return frame
        return None

    def as_exception(self) -> ParsedException:
        return ParsedException(FATAL_ERROR_TYPE, f"{FATAL_PREFIX}{self.error}", self.current_thread)


def find_faulthandler_dump(text: str) -> Optional[FaulthandlerDump]:
    """The last faulthandler dump in `text`, None if there is none."""
    lines = split_lines(text)
    start = next((i for i in range(len(lines) - 1, -1, -1) if FATAL_PREFIX in lines[i]), None)
    if start is None:
        return None
    error = lines[start].split(FATAL_PREFIX, 1)[1].strip()
    threads: List[Tuple[bool, List[Frame]]] = []
    for line in lines[start + 1 :]:
        header = _THREAD.match(line)
        if header is not None or line.strip() == _STACK:
            current = header is None or header.group("which") == "Current thread"
            threads.append((current, []))
            continue
        frame = _FAULT_FRAME.match(line) if threads else None
        if frame is not None:
            lineno = frame.group("line")
            threads[-1][1].append(
                Frame(
                    frame.group("file"),
                    int(lineno) if lineno.isdigit() else None,
                    frame.group("func").strip(),
                    None,
                )
            )
        elif threads and line.strip() and not line[0].isspace():
            # "Extension modules: ..." or whatever the process printed next.
            break
        # Otherwise: blank lines between threads, "  <no Python frame>", "  ...", or,
        # before the first thread, what Py_FatalError prints (runtime state, a traceback).
    stacks = [(current, tuple(reversed(frames))) for current, frames in threads]
    chosen = _faulting_thread(stacks)
    if chosen is None:
        return FaulthandlerDump(error, (), ())
    others = tuple(stack for index, (_, stack) in enumerate(stacks) if index != chosen)
    return FaulthandlerDump(error, stacks[chosen][1], others)


def _faulting_thread(stacks: Sequence[Tuple[bool, Tuple[Frame, ...]]]) -> Optional[int]:
    """The thread marked current; else the main thread, which CPython lists last."""
    if not stacks:
        return None
    for index, (current, _) in enumerate(stacks):
        if current:
            return index
    for index, (_, stack) in enumerate(stacks):
        if stack and stack[0].function == "<module>":
            return index
    return len(stacks) - 1

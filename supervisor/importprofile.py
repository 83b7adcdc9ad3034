"""The child's import profile: ``import time:`` lines into a tree and a start-up summary.

Owns: parsing the lines that ``PYTHONPROFILEIMPORTTIME=1`` makes CPython print
on stderr (the header included), the import tree rebuilt from them (each line
comes when its import completes, children before their parent), the arrival
moment of each line, the ``startup`` summary of the report, the start-up
waterfall lines of the human block, and deciding whether a command is a Python
program (only those get the variable).
Must not know: where the lines come from (``relay`` takes them out of the
child's stderr), or how the summary is shown beyond its own lines.

Imported before the spawn (``wants_import_profile``): nothing here may import
more than the standard library's ``os``, and values use ``values.frozen``.
"""

from __future__ import annotations

import os

from .values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Mapping, Optional, Sequence

ENV_NAME = "PYTHONPROFILEIMPORTTIME"
MARKER = b"import time:"
HEADER = "self [us] | cumulative | imported package"
# A real line is about 40 bytes plus the module name; anything longer is the app's text.
MAX_LINE = 1024
# A large app imports a few thousand modules; beyond this only the count goes on.
MAX_RECORDS = 20_000
SLOWEST = 10
WATERFALL_SLOWEST = 5
# Lines of the profile kept in the report (and attached to the Sentry event).
REPORT_LINES = 5_000
# uvicorn's own lines that mark the steps after the imports.
MILESTONES = (
    ("server_process", b"Started server process"),
    ("lifespan_start", b"Waiting for application startup."),
    ("lifespan_done", b"Application startup complete."),
)
# A console script whose path is too long for a shebang gets this from pip.
_PIP_LONG_SHEBANG = b"'''exec'"


@frozen
class ImportRecord:
    """One completed import, as one ``import time:`` line said it."""

    name: str
    self_us: int
    cumulative_us: int
    depth: int  # 0 for an import no other timed import was running around
    at_s: float  # when the line arrived, seconds after the spawn

    def line(self) -> str:
        """The line as Python printed it, with its arrival time in front."""
        return (f"{self.at_s:8.3f} s | {self.self_us:9d} | {self.cumulative_us:10d} | "
                f"{'  ' * self.depth}{self.name}")


@frozen
class ImportNode:
    """An import and the timed imports it ran, in the order they completed."""

    record: ImportRecord
    children: tuple[ImportNode, ...] = ()


@frozen
class Startup:
    """What the import profile says about the start: the report's ``startup`` object."""

    count: int  # imports timed (beyond MAX_RECORDS too)
    total_us: int  # the imports that were not inside another timed import, summed
    slowest: tuple[ImportRecord, ...]  # by cumulative time, slowest first
    last: Optional[ImportRecord]  # the last import completed before the end
    # Imports that had begun and never completed when the lines stopped: the
    # last completed line was this deep with no parent line after it.
    open_depth: int
    interpreter_ready_s: Optional[float]  # when ``site`` was imported
    milestones: tuple[tuple[str, float], ...]  # (name, seconds after spawn)
    processes: int  # headers seen: more than one when the child started Pythons too
    lines: tuple[str, ...]  # the profile, for the attachment (capped)

    def as_json(self) -> dict[str, Any]:
        return {
            "import_count": self.count,
            "import_total_s": round(self.total_us / 1e6, 3),
            "slowest_imports": [_record_json(r) for r in self.slowest],
            "last_import": None if self.last is None else _record_json(self.last),
            "open_imports": self.open_depth,
            "interpreter_ready_s": _round(self.interpreter_ready_s),
            "milestones": {name: round(at, 3) for name, at in self.milestones},
            "python_processes": self.processes,
            "import_profile": list(self.lines),
        }


def _record_json(record: ImportRecord) -> dict[str, Any]:
    return {
        "module": record.name,
        "cumulative_s": round(record.cumulative_us / 1e6, 4),
        "self_s": round(record.self_us / 1e6, 4),
        "depth": record.depth,
        "at_s": round(record.at_s, 3),
    }


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


# ------------------------------------------------------------------ the lines


def parse_line(line: bytes | str) -> Optional[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) of one line; None for the header.

    Raises ValueError when the line is not in the format CPython prints.
    """
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    if not text.startswith("import time:"):
        raise ValueError("not an import time line")
    fields = text[len("import time:"):].split("|", 2)
    if len(fields) != 3:
        raise ValueError("not three fields")
    if fields[0].strip() == "self [us]":
        return None
    rest = fields[2]
    name = rest.lstrip(" ")
    indent = len(rest) - len(name) - 1  # one space follows the bar
    if not name or indent < 0 or " " in name:
        raise ValueError("no module name")
    return int(fields[0]), int(fields[1]), indent // 2, name


def is_import_line(line: bytes) -> bool:
    """Whether ``line`` (no newline) is one CPython printed: the relay's cheap test."""
    if len(line) > MAX_LINE or not line.startswith(MARKER) or line.count(b"|") < 2:
        return False
    try:
        parse_line(line)
    except ValueError:
        return False
    return True


class ImportProfile:
    """Collects the lines as they arrive; ``startup()`` summarises them."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._records: list[ImportRecord] = []
        self._max_records = max_records
        self._count = 0
        self._processes = 0
        self._milestones: dict[str, float] = {}

    @property
    def count(self) -> int:
        return self._count

    def add_line(self, line: bytes, at_s: float) -> None:
        """One line, without its newline, that ``is_import_line`` accepted."""
        try:
            parsed = parse_line(line)
        except ValueError:
            return
        if parsed is None:
            self._processes += 1
            return
        if self._processes > 1:
            # A second interpreter (a worker, a subprocess) prints into the same
            # pipe: its lines and ours cannot be told apart, so it is only counted.
            self._count += 1
            return
        self._count += 1
        if len(self._records) < self._max_records:
            self_us, cumulative_us, depth, name = parsed
            self._records.append(ImportRecord(name, self_us, cumulative_us, depth, at_s))

    def mark(self, name: str, at_s: float) -> None:
        """A start-up step seen in the output (the first time counts)."""
        self._milestones.setdefault(name, at_s)

    def marked(self, name: str) -> bool:
        return name in self._milestones

    def tree(self) -> tuple[ImportNode, ...]:
        return build_tree(self._records)[0]

    def startup(self) -> Startup:
        return summarize(self._records, self._count, self._processes, self._milestones)


def build_tree(records: Sequence[ImportRecord]) -> tuple[tuple[ImportNode, ...], int]:
    """The roots of the import tree, and how deep the imports still open were.

    A line comes when its import completes, after the lines of what it
    imported: a record at depth d adopts the records deeper than d that came
    since the last record at depth d or above.
    """
    pending: list[ImportNode] = []
    for record in records:
        first_child = len(pending)
        while first_child > 0 and pending[first_child - 1].record.depth > record.depth:
            first_child -= 1
        children = tuple(pending[first_child:])
        del pending[first_child:]
        pending.append(ImportNode(record, children))
    open_depth = pending[-1].record.depth if pending else 0
    return tuple(pending), open_depth


def summarize(
    records: Sequence[ImportRecord], count: int, processes: int,
    milestones: Mapping[str, float],
) -> Startup:
    _, open_depth = build_tree(records)
    slowest = sorted(records, key=lambda r: r.cumulative_us, reverse=True)[:SLOWEST]
    ready = [r.at_s for r in records if r.depth == 0 and r.name == "site"]
    lines = [r.line() for r in records]
    if len(lines) > REPORT_LINES:
        # The last lines say what happened just before the end: keep them.
        lines = [*lines[:REPORT_LINES // 5], "...", *lines[-(REPORT_LINES * 4 // 5):]]
    return Startup(
        count=count,
        total_us=sum(r.cumulative_us for r in records if r.depth == 0),
        slowest=tuple(slowest),
        last=records[-1] if records else None,
        open_depth=open_depth,
        interpreter_ready_s=ready[0] if ready else None,
        milestones=tuple(sorted(milestones.items(), key=lambda item: item[1])),
        processes=processes,
        lines=tuple(lines),
    )


# ------------------------------------------------------------- the waterfall


def waterfall(
    startup: Optional[Mapping[str, Any]],
    ready_after_s: Optional[float],
    ended_s: Optional[float] = None,
    budget: Optional[tuple[str, float]] = None,
) -> list[str]:
    """The start-up steps for the human block, from the report's ``startup`` object.

    ``budget`` is (who, seconds): the deadline a platform or health check gives.
    """
    if not startup:
        return []
    steps = ["exec 0.00 s"]
    ready = startup.get("interpreter_ready_s")
    if ready is not None:
        steps.append(f"interpreter {ready:.2f} s")
    slowest = startup.get("slowest_imports") or []
    total = float(startup.get("import_total_s") or 0.0)
    if startup.get("import_count"):
        steps.append(f"imports {total:.2f} s ({startup['import_count']})")
    marks = startup.get("milestones") or {}
    if "lifespan_start" in marks:
        steps.append(f"app loaded {marks['lifespan_start']:.2f} s")
    if "lifespan_done" in marks:
        steps.append(f"lifespan done {marks['lifespan_done']:.2f} s")
    if ready_after_s is not None:
        steps.append(f"ready {ready_after_s:.2f} s")
    elif ended_s is not None:
        steps.append(f"ended {ended_s:.2f} s, never ready")
    lines = [" -> ".join(steps)]
    if slowest:
        lines.append("slowest imports: " + ", ".join(
            f"{item['module']} {float(item['cumulative_s']):.2f} s"
            for item in slowest[:WATERFALL_SLOWEST]
        ))
    last = startup.get("last_import")
    if ready_after_s is None and last:
        text = f"last import completed: {last['module']} at {float(last['at_s']):.2f} s"
        if startup.get("open_imports"):
            text += f", {startup['open_imports']} import(s) still running"
        lines.append(text)
    if budget is not None and ready_after_s is not None and budget[1] > 0:
        who, seconds = budget
        share = ready_after_s / seconds
        lines.append(f"ready at {ready_after_s:.1f} s of {who}'s {seconds:g} s ({share:.0%})")
    return lines


def over_half_budget(ready_after_s: Optional[float], budget: Optional[tuple[str, float]]) -> bool:
    """A healthy start that used more than half its deadline deserves a warning."""
    return ready_after_s is not None and budget is not None and ready_after_s > budget[1] / 2


# ------------------------------------------------------ which child is Python


def is_python_name(path: str) -> bool:
    """``python``, ``python3``, ``python3.11``, ``pypy3``... by the file's name."""
    name = os.path.basename(path)
    for prefix in ("python", "pypy"):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return all(c.isdigit() or c in ".-dmtw" for c in rest)
    return False


def is_python_script(head: bytes) -> bool:
    """Whether a file starting with ``head`` is run by Python (its shebang says so)."""
    if not head.startswith(b"#!"):
        return False
    lines = head.split(b"\n", 2)
    shebang = lines[0][2:].strip().split()
    if not shebang:
        return False
    program = shebang[0].decode("utf-8", "replace")
    if os.path.basename(program) == "env":
        words = [w.decode("utf-8", "replace") for w in shebang[1:] if not w.startswith(b"-")]
        return bool(words) and is_python_name(words[0])
    if is_python_name(program):
        return True
    # pip writes `#!/bin/sh` and an exec of the interpreter when the path is long.
    return (len(lines) > 1 and lines[1].startswith(_PIP_LONG_SHEBANG)
            and b"python" in lines[1])


def resolve_command(argv0: str, path: Optional[str]) -> Optional[str]:
    """The file ``execvp`` would run for ``argv0``, or None."""
    if "/" in argv0:
        return argv0 if os.path.isfile(argv0) else None
    for directory in (path or os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", argv0)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def is_python_command(argv: Sequence[str], path: Optional[str]) -> bool:
    """The interpreter itself, or a script or console entry point whose shebang is Python."""
    if not argv:
        return False
    if is_python_name(argv[0]):
        return True
    found = resolve_command(argv[0], path)
    if found is None:
        return False
    if is_python_name(os.path.realpath(found)):
        return True
    try:
        with open(found, "rb") as script:
            head = script.read(512)
    except OSError:
        return False
    return is_python_script(head)


def wants_import_profile(
    argv: Sequence[str], env: Mapping[str, str], disabled: bool = False
) -> bool:
    """Set ``PYTHONPROFILEIMPORTTIME=1`` for this child? Not when the user set it."""
    if disabled or ENV_NAME in env:
        return False
    return is_python_command(argv, env.get("PATH"))

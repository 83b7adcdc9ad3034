"""The supervisor's own lines: one recognisable prefix, or one JSON object each.

Owns: formatting. Lines go to a writer (the stderr ``Sink`` once the loop
runs), so they never interleave mid-line with the child's relayed bytes.
Must not know: what happened; callers say it.
"""

from __future__ import annotations

import time

from .config import LogFormat

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable

PREFIX = "[supervisor] "


class Logger:
    def __init__(self, log_format: LogFormat, write: Callable[[bytes], None]) -> None:
        self._json = log_format is LogFormat.JSON
        self._write = write

    def set_writer(self, write: Callable[[bytes], None]) -> None:
        self._write = write

    def info(self, message: str, **fields: Any) -> None:
        self._emit("info", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._emit("warning", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._emit("error", message, fields)

    def block(self, lines: list[str], level: str = "error", **fields: Any) -> None:
        """A multi-line block (the crash report): every line carries the prefix."""
        for line in lines:
            self._emit(level, line, fields, marked=False)

    def _emit(
        self, level: str, message: str, fields: dict[str, Any], marked: bool = True
    ) -> None:
        if self._json:
            record = {"ts": round(time.time(), 3), "level": level, "logger": "supervisor"}
            record["msg"] = message
            record.update(fields)
            text = _json_line(record)
        else:
            marker = f"{level}: " if marked and level != "info" else ""
            text = "".join(
                f"{PREFIX}{marker if n == 0 else ''}{part}\n"
                for n, part in enumerate(message.split("\n"))
            )
        self._write(text.encode("utf-8", "replace"))


def _json_line(record: dict[str, Any]) -> str:
    """One JSON object and a newline; written by hand when ``json`` cannot be imported.

    Without a free fd (EMFILE) not even an import can open its file, and the
    line that says so must still get out.
    """
    try:
        import json
    except Exception:
        parts = (f"{_json_string(str(key))}: {_json_value(value)}" for key, value in record.items())
        return "{" + ", ".join(parts) + "}\n"
    return json.dumps(record, default=str, ensure_ascii=False) + "\n"


def _json_value(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int) or (isinstance(value, float) and abs(value) < float("inf")):
        return repr(value)
    return _json_string(str(value))


def _json_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(f"\\u{ord(c):04x}" if c < " " else c for c in escaped) + '"'

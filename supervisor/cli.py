"""The command line and ``SUPERVISOR_*`` variables, turned into one ``Config``.

Owns: the table of options, their help text, and the rule that a flag wins
over its variable. Every value is validated here, before anything starts.
Must not know: what the options do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

from . import __version__
from .config import Config, LogFormat, parse_bool, parse_duration
from .errors import UsageError

Value = Union[str, int, float, bool, LogFormat, None]


@dataclass(frozen=True)
class Option:
    flag: str
    field: str
    help: str
    metavar: str = ""
    # None marks a switch: present means true, and the variable takes 1/0/true/false.
    parse: Optional[Callable[[str, str], Value]] = None

    @property
    def env(self) -> str:
        return "SUPERVISOR_" + self.flag[2:].upper().replace("-", "_")


def _choice(kind: type[LogFormat]) -> Callable[[str, str], Value]:
    def parse(option: str, text: str) -> Value:
        try:
            return kind(text.strip().lower())
        except ValueError:
            names = ", ".join(member.value for member in kind)
            raise UsageError.bad_value(option, text, f"one of {names}") from None

    return parse


def _path(option: str, text: str) -> Value:
    if not text:
        raise UsageError.bad_value(option, text, "a file path")
    return text


OPTIONS: tuple[Option, ...] = (
    Option(
        "--stop-timeout", "stop_timeout_s",
        "grace after a forwarded SIGTERM/SIGINT before the child's group is killed "
        "(default 25s, inside the 30 s that ECS and Kubernetes give)",
        "DURATION", parse_duration,
    ),
    Option(
        "--kill-group", "kill_group",
        "forward signals to the child's whole process group, not just the child",
    ),
    Option(
        "--relay-stdout", "relay_stdout",
        "relay the child's stdout through the supervisor too (default: inherited directly)",
    ),
    Option(
        "--report-file", "report_file",
        "write the JSON crash report to this path (atomically) when the child ends",
        "PATH", _path,
    ),
    Option(
        "--log-format", "log_format",
        "format of the supervisor's own lines: text or json (one object per line)",
        "FORMAT", _choice(LogFormat),
    ),
)

_BY_FLAG = {option.flag: option for option in OPTIONS}

USAGE = "usage: supervisor [OPTIONS] [--] COMMAND [ARGS...]"


class HelpRequested(Exception):
    """``--help`` or ``--version``: print ``text`` to stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def help_text() -> str:
    lines = [
        USAGE,
        "",
        "Run COMMAND as a child, relay its output, forward signals, reap zombies,",
        "and when it ends say why on stderr (and in a report), then exit with its status.",
        "",
        "options (each also read from the variable shown; the flag wins):",
    ]
    for option in OPTIONS:
        head = f"  {option.flag} {option.metavar}".rstrip()
        lines.append(f"{head:<28} {option.help}")
        lines.append(f"{'':<28} [{option.env}]")
    lines += [
        f"  {'-h, --help':<26} show this help and exit",
        f"  {'--version':<26} show the version and exit",
        "",
        "exit status: the child's exit code, or 128+N when it died of signal N;",
        "2 for a bad command line; 127/126 when COMMAND cannot be found/executed.",
        "",
        "example: supervisor -- uvicorn app.main:app --host 0.0.0.0 --port 8000",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Build the ``Config`` or raise ``UsageError`` / ``HelpRequested``."""
    values: dict[str, Value] = {}
    for option in OPTIONS:
        raw = environ.get(option.env)
        if raw is not None:
            values[option.field] = _convert(option, option.env, raw)

    command: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            command = list(argv[index + 1 :])
            break
        if arg in ("-h", "--help"):
            raise HelpRequested(help_text())
        if arg == "--version":
            raise HelpRequested(f"supervisor {__version__}")
        if not arg.startswith("-") or arg == "-":
            command = list(argv[index:])
            break
        name, has_inline, inline = arg.partition("=")
        if name not in _BY_FLAG:
            raise UsageError(f"unknown option {name!r} (see supervisor --help)")
        option = _BY_FLAG[name]
        if option.parse is None:
            values[option.field] = parse_bool(name, inline) if has_inline else True
        else:
            if has_inline:
                raw = inline
            elif index + 1 < len(argv):
                index += 1
                raw = argv[index]
            else:
                raise UsageError(f"{name}: missing value: expected {option.metavar}")
            values[option.field] = _convert(option, name, raw)
        index += 1

    if not command:
        raise UsageError(f"no command given: {USAGE}")
    return Config(command=tuple(command), **values)  # type: ignore[arg-type]


def _convert(option: Option, name: str, raw: str) -> Value:
    if option.parse is None:
        return parse_bool(name, raw)
    return option.parse(name, raw)

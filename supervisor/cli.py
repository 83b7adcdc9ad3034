"""The command line and ``SUPERVISOR_*`` variables, turned into one ``Config``.

Owns: the table of options, their help text, and the rule that a flag wins
over its variable. Every value is validated here, before anything starts.
Must not know: what the options do.
"""

from __future__ import annotations

from . import __version__
from .config import (
    Config,
    EarlyRequests,
    Handoff,
    LogFormat,
    parse_bool,
    parse_cpu_limit,
    parse_dsn,
    parse_duration,
    parse_fraction,
    parse_health_check,
    parse_memory_limit,
    parse_port,
    parse_status,
    parse_url_path,
)
from .errors import UsageError
from .values import frozen

# On the path from exec to spawning the child: no typing or re at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional, Sequence, Union

    Value = Union[str, int, float, bool, LogFormat, Handoff, EarlyRequests, None]
    Choice = Union[type[LogFormat], type[Handoff], type[EarlyRequests]]


@frozen
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


def _choice(kind: Choice) -> Callable[[str, str], Value]:
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


def _interval_or_off(option: str, text: str) -> Value:
    return parse_duration(option, text, allow_zero=True)


def _text(option: str, text: str) -> Value:
    if not text.strip():
        raise UsageError.bad_value(option, text, "a non-empty value")
    return text.strip()


def _host(option: str, text: str) -> Value:
    host = text.strip().strip("[]")
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise UsageError.bad_value(option, text, "an address such as 0.0.0.0, 127.0.0.1 or ::")
    return host


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
    Option(
        "--port", "port",
        "public port the supervisor binds (default: the uvicorn command's --port, else $PORT, "
        "else 8000)", "PORT", parse_port,
    ),
    Option(
        "--host", "host",
        "public address to bind (default: the uvicorn command's --host, else 0.0.0.0)",
        "HOST", _host,
    ),
    Option(
        "--health-path", "health_path",
        "path the stub answers while the app starts (default /healthz)", "PATH", parse_url_path,
    ),
    Option(
        "--ready-path", "ready_path",
        "optional readiness path: 503 until the app is ready", "PATH", parse_url_path,
    ),
    Option(
        "--starting-status", "starting_status",
        "status of the health path while starting (default 200; 503 for platforms that "
        "route on it)", "STATUS", parse_status,
    ),
    Option(
        "--handoff", "handoff",
        "how the app gets the socket: auto, fd, systemd, port, none (default auto: fd for "
        "uvicorn/hypercorn/daphne, systemd for gunicorn, the bind answered for the rest)",
        "MODE", _choice(Handoff),
    ),
    Option(
        "--health-port", "health_port",
        "the stub's own port in port mode (the app binds its own address)", "PORT", parse_port,
    ),
    Option(
        "--startup-timeout", "startup_timeout_s",
        "not ready by then: SIGABRT (stack dump), then SIGKILL; exit 124 (default 120s)",
        "DURATION", parse_duration,
    ),
    Option(
        "--early-requests", "early_requests",
        "requests for other paths before readiness: hold (pass on when ready) or reject (503)",
        "MODE", _choice(EarlyRequests),
    ),
    Option(
        "--memory-interval", "memory_interval_s",
        "memory sampling period (default 500ms)", "DURATION", parse_duration,
    ),
    Option(
        "--memory-warn", "memory_warn",
        "usage of the memory limit that logs one warning (default 90%)", "PERCENT",
        parse_fraction,
    ),
    Option(
        "--termination-log", "termination_log",
        "Kubernetes' termination message file, kept up to date when it exists and is "
        "writable (default /dev/termination-log)", "PATH", _path,
    ),
    Option(
        "--stack-interval", "stack_interval_s",
        "how often the child's Python stack is read with py-spy while it starts "
        "(default 1s; 0 turns it off)", "DURATION", _interval_or_off,
    ),
    Option(
        "--no-import-profile", "no_import_profile",
        "do not start a Python child with PYTHONPROFILEIMPORTTIME=1",
    ),
    Option(
        "--sentry-dsn", "sentry_dsn",
        "where crash events go (default $SENTRY_DSN)", "DSN", parse_dsn,
    ),
    Option(
        "--sentry-timeout", "sentry_timeout_s",
        "the most that Sentry delivery may delay the exit (default 5s)", "DURATION",
        parse_duration,
    ),
    Option(
        "--memory-limit", "memory_limit",
        "reproduce: a memory limit on the child alone (cgroup), e.g. 512M", "SIZE",
        parse_memory_limit,
    ),
    Option(
        "--cpu-limit", "cpu_limit",
        "reproduce: a CPU quota on the child alone (cgroup), e.g. 0.25", "CPUS", parse_cpu_limit,
    ),
    Option(
        "--env-file", "env_file",
        "reproduce: add the variables of this dotenv file to the child's environment",
        "FILE", _path,
    ),
    Option(
        "--clean-env", "clean_env",
        "reproduce: the child gets only the env file's variables, and what an image keeps "
        "of the caller's (PATH, HOME, LANG, LC_*, VIRTUAL_ENV)",
    ),
    Option(
        "--no-network", "no_network",
        "reproduce: run the child in a network namespace with loopback only",
    ),
    Option(
        "--health-check", "health_check",
        "reproduce: probe the port as the platform does, e.g. "
        "http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=5,grace=0", "SPEC", _text,
    ),
    Option(
        "--platform", "platform",
        "reproduce: a platform's documented defaults (apprunner, cloudrun, heroku, ecs, "
        "kubernetes); explicit flags win", "NAME", _text,
    ),
    Option(
        "--send-report", "send_report",
        "send a saved report file to Sentry and exit (for a container that could not)",
        "FILE", _path,
    ),
)

_BY_FLAG = {option.flag: option for option in OPTIONS}

USAGE = "usage: supervisor [OPTIONS] [--] COMMAND [ARGS...]"


class HelpRequested(Exception):
    """``--help``, ``--version`` or a subcommand's output: print ``text`` to stdout, exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# Subcommands, when they are the first word; ``supervisor -- compare`` runs a
# program of that name instead.
SUBCOMMANDS = ("compare",)


def help_text() -> str:
    lines = [
        USAGE,
        "",
        "Run COMMAND as a child, relay its output, forward signals, reap zombies,",
        "and when it ends say why on stderr (and in a report), then exit with its status.",
        "",
        "options (each also read from the variable shown; the flag wins):",
    ]
    import textwrap  # only for --help

    indent = " " * 29
    for option in OPTIONS:
        head = f"  {option.flag} {option.metavar}".rstrip()
        text = f"{option.help} [{option.env}]"
        wrapped = textwrap.wrap(text, width=100, initial_indent=indent, subsequent_indent=indent)
        first = wrapped[0][len(indent):]
        if len(head) < 28:
            lines.append(f"{head:<28} {first}")
        else:
            lines += [head, indent + first]
        lines += wrapped[1:]
    lines += [
        f"  {'-h, --help':<26} show this help and exit",
        f"  {'--version':<26} show the version and exit",
        "",
        "exit status: the child's exit code, or 128+N when it died of signal N;",
        "2 for a bad command line; 127/126 when COMMAND cannot be found/executed.",
        "",
        "example: supervisor -- uvicorn app.main:app --host 0.0.0.0 --port 8000",
        "",
        "supervisor compare A.json B.json: how two runs differ, from their reports (values",
        "compared by a keyed hash when both runs had the same SUPERVISOR_COMPARE_KEY)",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Build the ``Config`` or raise ``UsageError`` / ``HelpRequested``."""
    if argv and argv[0] in SUBCOMMANDS:
        from .compare import run as compare

        raise HelpRequested(compare(argv[1:]))
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

    if "sentry_dsn" not in values and environ.get("SENTRY_DSN", "").strip():
        # Sentry's own variable: honoured, but a malformed one only switches
        # Sentry off (the loop says so) instead of refusing to start the app.
        values["sentry_dsn"] = environ["SENTRY_DSN"].strip()
    if not command and not values.get("send_report"):
        raise UsageError(f"no command given: {USAGE}")
    if values.get("platform") or values.get("health_check"):
        _apply_platform(values)
    return Config(command=tuple(command), **values)  # type: ignore[arg-type]


def _apply_platform(values: dict[str, Value]) -> None:
    """Lay a platform's defaults under the explicit values, and parse the health check."""
    base = None
    name = values.pop("platform", None)
    filled: list[str] = []
    if name:
        from .platforms import get_platform

        platform = get_platform(str(name))
        values["platform"] = platform.title
        values["platform_name"] = platform.name
        base = platform.health_check
        for field, preset in (
            ("memory_limit", platform.memory_limit),
            ("cpu_limit", platform.cpu_limit),
            ("startup_timeout_s", platform.startup_timeout_s),
        ):
            if field not in values and preset is not None:
                values[field] = preset
                filled.append(field)
        if "stop_timeout_s" not in values and platform.stop_timeout_s is not None:
            # Finish inside the platform's own SIGKILL, with room for the report.
            grace = max(1.0, platform.stop_timeout_s - 2.0)
            values["stop_timeout_s"] = min(grace, Config.stop_timeout_s)
            filled.append("stop_timeout_s")
        if "health_check" not in values:
            filled.append("health_check")
    text = values.pop("health_check", None)
    spec = parse_health_check(str(text), base=base) if text else base
    if spec is not None:
        values["health_check"] = spec  # type: ignore[assignment]
    if filled:
        values["from_preset"] = tuple(filled)  # type: ignore[assignment]


def _convert(option: Option, name: str, raw: str) -> Value:
    if option.parse is None:
        return parse_bool(name, raw)
    return option.parse(name, raw)

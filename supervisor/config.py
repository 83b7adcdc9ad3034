"""The supervisor's configuration as one frozen value, and every value parser.

Owns: ``Config``; the parsing of durations, sizes, ports, statuses, fractions,
booleans, a Sentry DSN, the memory and CPU limits, and the ``--health-check``
specification (``HealthCheckSpec``); and ``seconds_text``, the one way a
duration is written back for people.
Must not know: where the values came from (``cli`` does), or what runs them.
"""

from __future__ import annotations

import enum

from .errors import UsageError
from .values import frozen

# This module is on the path from exec to spawning the child: no ``re``,
# ``typing`` or ``dataclasses`` at run time (see ``values``).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


class Handoff(enum.Enum):
    """``--handoff``: how the public socket reaches the child."""

    # fd for uvicorn, hypercorn, daphne or a {fd} placeholder; systemd for gunicorn;
    # the app's bind(2) answered for servers that bind their own address.
    AUTO = "auto"
    FD = "fd"
    SYSTEMD = "systemd"
    PORT = "port"  # the app binds its own address; the stub has --health-port
    NONE = "none"  # no socket and no stub: a plain process supervisor


class EarlyRequests(enum.Enum):
    HOLD = "hold"  # keep them until the app is ready, then pass them on
    REJECT = "reject"  # answer 503 with Retry-After at once


@frozen
class Config:
    command: tuple[str, ...]
    stop_timeout_s: float = 25.0
    kill_group: bool = False
    relay_stdout: bool = False
    report_file: Optional[str] = None
    log_format: LogFormat = LogFormat.TEXT
    # The public socket and the stub.
    host: Optional[str] = None
    port: Optional[int] = None
    health_path: str = "/healthz"
    ready_path: Optional[str] = None
    starting_status: int = 200
    handoff: Handoff = Handoff.AUTO
    health_port: Optional[int] = None
    startup_timeout_s: float = 120.0
    early_requests: EarlyRequests = EarlyRequests.HOLD
    # Memory.
    memory_interval_s: float = 0.5
    memory_warn: float = 0.9
    termination_log: str = "/dev/termination-log"
    # Start-up forensics.
    stack_interval_s: float = 1.0  # 0 switches stack sampling off
    no_import_profile: bool = False
    # Sentry.
    sentry_dsn: Optional[str] = None
    sentry_timeout_s: float = 5.0
    send_report: Optional[str] = None
    # Reproducing a platform's conditions.
    memory_limit: Optional[int] = None
    cpu_limit: Optional[float] = None
    env_file: Optional[str] = None
    clean_env: bool = False
    no_network: bool = False
    health_check: Optional[HealthCheckSpec] = None
    platform: Optional[str] = None  # the preset's title, for the verdict
    platform_name: Optional[str] = None  # the preset's name, as --platform takes it
    # The fields the preset filled (no flag or variable gave them), in Config's names.
    from_preset: tuple[str, ...] = ()

    @property
    def reproduces(self) -> bool:
        """Whether any of a platform's conditions is imposed on the child."""
        return bool(self.platform_name or self.env_file or self.clean_env or self.no_network
                    or self.health_check or self.memory_limit is not None
                    or self.cpu_limit is not None)


def parse_dsn(option: str, text: str) -> str:
    """A Sentry DSN: ``http(s)://PUBLIC_KEY@HOST[:PORT][/PATH]/PROJECT_ID``."""
    dsn = text.strip()
    scheme, _, rest = dsn.partition("://")
    credentials, at, location = rest.rpartition("@")
    host, _, path = location.partition("/")
    project = path.rstrip("/").rpartition("/")[2]
    if (
        scheme not in ("http", "https")
        or not at
        or not credentials.partition(":")[0]
        or not host
        or not project
        or any(c.isspace() for c in dsn)
    ):
        # The key is a secret: never echo it, even in an error.
        shown = f"{scheme}://[redacted]@{location}" if at else dsn
        raise UsageError.bad_value(
            option, shown, "a Sentry DSN such as https://KEY@o0.ingest.sentry.io/123"
        )
    return dsn


def parse_url_path(option: str, text: str) -> str:
    if not text.startswith("/") or any(c.isspace() for c in text) or "?" in text:
        raise UsageError.bad_value(option, text, "a path starting with / such as /healthz")
    return text


def parse_status(option: str, text: str) -> int:
    return parse_int(option, text, 200, 599, "an HTTP status")


_DURATION_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _number(text: str) -> Optional[float]:
    """A plain non-negative decimal (no sign, exponent, inf or nan), else None."""
    if not text or text.count(".") > 1 or not text.replace(".", "").isdigit():
        return None
    if not text.isascii():
        return None
    return float(text)


def parse_duration(option: str, text: str, *, allow_zero: bool = False) -> float:
    """``30``, ``30s``, ``500ms``, ``2m``, ``1h`` to seconds."""
    raw = text.strip().lower()
    scale = 1.0
    for unit, factor in _DURATION_UNITS:
        if raw.endswith(unit):
            raw, scale = raw[: -len(unit)].strip(), factor
            break
    number = _number(raw)
    if number is None:
        raise UsageError.bad_value(option, text, "a duration such as 30, 30s, 500ms or 2m")
    seconds = number * scale
    if seconds == 0 and not allow_zero:
        raise UsageError.bad_value(option, text, "a duration greater than zero")
    return seconds


def parse_size(option: str, text: str) -> int:
    """``512M``, ``1G``, ``1.5GiB``, ``536870912`` to bytes (binary units, as Docker)."""
    raw = text.strip().lower()
    if raw.endswith("b"):
        raw = raw[:-1]
    if raw.endswith("i"):
        raw = raw[:-1]
    unit = raw[-1:] if raw[-1:] in _SIZE_UNITS else ""
    number = _number(raw[: len(raw) - len(unit)].strip())
    if number is None:
        raise UsageError.bad_value(option, text, "a size such as 512M, 1G or 536870912")
    size = int(number * _SIZE_UNITS[unit])
    if size <= 0:
        raise UsageError.bad_value(option, text, "a size greater than zero")
    return size


def parse_int(option: str, text: str, low: int, high: int, what: str = "an integer") -> int:
    raw = text.strip()
    if not raw.isascii() or not raw.isdigit():
        raise UsageError.bad_value(option, text, f"{what} from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise UsageError.bad_value(option, text, f"{what} from {low} to {high}")
    return value


def parse_port(option: str, text: str) -> int:
    return parse_int(option, text, 1, 65535, "a port number")


def parse_fraction(option: str, text: str) -> float:
    """``90%``, ``90`` or ``0.9`` to a fraction in (0, 1]."""
    raw = text.strip()
    percent = raw.endswith("%")
    number = _number(raw.rstrip("%").strip())
    if number is None:
        raise UsageError.bad_value(option, text, "a percentage such as 90% or 0.9")
    value = number
    if percent or value > 1:
        value /= 100
    if not 0 < value <= 1:
        raise UsageError.bad_value(option, text, "a percentage from 1% to 100%")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(option: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise UsageError.bad_value(option, text, "one of 1, 0, true, false, yes, no")


def seconds_text(value: float, bare: bool = False) -> str:
    """``0 s``, ``0.3 s``, ``2 s``, ``2.5 s``, ``25 s``: a duration as a person reads it.

    ``bare`` leaves out the unit, for a value that ``parse_duration`` reads back.
    """
    if value >= 10 or value == int(value):
        number = f"{value:.0f}"
    elif value >= 0.1:
        number = f"{value:.1f}".rstrip("0").rstrip(".")
    else:
        number = f"{value:.2f}".rstrip("0").rstrip(".") or "0"
    return number if bare else f"{number} s"


# -- the limits a platform imposes ----------------------------------------------------

# Docker's own floor for --memory: below this not even the interpreter starts,
# and the run would report an OOM that says nothing about the app.
MIN_MEMORY_LIMIT = 6 * 1024 * 1024
# The CFS period the kernel uses by default (100 ms); a CPU quota is a share of it.
CFS_PERIOD_US = 100_000
# The kernel refuses a quota below 1 ms per period.
MIN_CFS_QUOTA_US = 1_000


def parse_memory_limit(option: str, text: str) -> int:
    """``512M``, ``1G``, ``536870912`` to bytes; at least 6 MiB, as Docker requires."""
    size = parse_size(option, text)
    if size < MIN_MEMORY_LIMIT:
        raise UsageError.bad_value(option, text, "a size of at least 6M")
    return size


def parse_cpu_limit(option: str, text: str) -> float:
    """``0.25``, ``1``, ``2`` CPUs, as ``docker run --cpus``; at least 0.01."""
    try:
        value = float(text.strip())
    except ValueError:
        raise UsageError.bad_value(option, text, "a number of CPUs such as 0.25, 1 or 2") from None
    if not value >= MIN_CFS_QUOTA_US / CFS_PERIOD_US or value == float("inf"):
        raise UsageError.bad_value(option, text, "a number of CPUs of at least 0.01")
    return value


# -- the platform's health check ------------------------------------------------------

HEALTH_CHECK_OPTION = "--health-check"
# When the specification names no value: App Runner's documented defaults,
# the platform whose check is the strictest of the common ones.
DEFAULT_INTERVAL_S = 5.0
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_HEALTHY = 1
DEFAULT_UNHEALTHY = 5
DEFAULT_HTTP_PATH = "/"


@frozen
class HealthCheckSpec:
    """What the platform probes and how often; ``problem()`` says what is wrong with it."""

    protocol: str  # "tcp" or "http"
    path: str  # HTTP only; "" for TCP
    interval_s: float
    timeout_s: float
    healthy_threshold: int
    unhealthy_threshold: int
    grace_s: float = 0.0  # failures of probes sent before this do not count

    def problem(self) -> Optional[str]:
        """Why this is not a check a platform could run, or None."""
        if self.protocol not in ("tcp", "http"):
            return f"protocol must be tcp or http, not {self.protocol!r}"
        if self.interval_s <= 0 or self.timeout_s <= 0 or self.grace_s < 0:
            return "interval and timeout must be positive, grace not negative"
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            return "thresholds must be at least 1"
        if self.protocol == "http" and not self.path.startswith("/"):
            return "an HTTP path must start with /"
        return None

    def describe(self) -> str:
        """The specification in the form ``parse_health_check`` reads."""
        head = f"http:{self.path}" if self.protocol == "http" else "tcp"
        text = (
            f"{head},interval={seconds_text(self.interval_s, bare=True)},"
            f"timeout={seconds_text(self.timeout_s, bare=True)},"
            f"healthy={self.healthy_threshold},unhealthy={self.unhealthy_threshold}"
        )
        if self.grace_s:
            text += f",grace={seconds_text(self.grace_s, bare=True)}"
        return text


_CHECK_KEYS = ("interval", "timeout", "healthy", "unhealthy", "grace")
_CHECK_EXPECTED = (
    "tcp or http:/path, then optional interval=, timeout=, healthy=, unhealthy=, grace= "
    "(e.g. http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=5,grace=10)"
)


def parse_health_check(text: str, base: Optional[HealthCheckSpec] = None) -> HealthCheckSpec:
    """``tcp`` or ``http:/path``, then ``key=value`` settings, comma-separated.

    Settings not given come from ``base`` (a platform's preset, so that
    ``--platform apprunner --health-check http:/healthz`` keeps App Runner's
    interval and thresholds), else from App Runner's defaults. Durations take
    the usual forms (``5``, ``5s``, ``500ms``). ``UsageError`` on bad input.
    """
    option = HEALTH_CHECK_OPTION

    def bad(expected: str = _CHECK_EXPECTED) -> UsageError:
        return UsageError.bad_value(option, text, expected)

    parts = [part.strip() for part in text.split(",")]
    kind, _, path = parts[0].partition(":")
    kind = kind.strip().lower()
    if kind not in ("tcp", "http"):
        raise bad()
    path = path.strip()
    if kind == "tcp":
        if path:
            raise bad("tcp without a path (a path is for http:/path)")
    else:
        if not path:
            path = base.path if base is not None and base.protocol == "http" else DEFAULT_HTTP_PATH
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise bad("an HTTP path starting with / and without spaces")
    settings: dict[str, str] = {}
    for part in parts[1:]:
        key, equals, value = part.partition("=")
        key = key.strip().lower()
        if not equals or key not in _CHECK_KEYS or not value.strip():
            raise bad()
        if key in settings:
            raise bad(f"{key}= given once")
        settings[key] = value.strip()

    def duration(key: str, fallback: float, allow_zero: bool = False) -> float:
        if key not in settings:
            return fallback
        return parse_duration(f"{option} {key}", settings[key], allow_zero=allow_zero)

    def count(key: str, fallback: int) -> int:
        if key not in settings:
            return fallback
        return parse_int(f"{option} {key}", settings[key], 1, 1000, "a whole number")

    return HealthCheckSpec(
        protocol=kind,
        path=path if kind == "http" else "",
        interval_s=duration("interval", base.interval_s if base else DEFAULT_INTERVAL_S),
        timeout_s=duration("timeout", base.timeout_s if base else DEFAULT_TIMEOUT_S),
        healthy_threshold=count("healthy", base.healthy_threshold if base else DEFAULT_HEALTHY),
        unhealthy_threshold=count(
            "unhealthy", base.unhealthy_threshold if base else DEFAULT_UNHEALTHY
        ),
        grace_s=duration("grace", base.grace_s if base else 0.0, allow_zero=True),
    )

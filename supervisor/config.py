"""The supervisor's configuration as one frozen value, and the value parsers.

Owns: ``Config`` and the parsing of durations, sizes and the other typed
values used on the command line and in ``SUPERVISOR_*`` variables.
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

    from .probes import HealthCheckSpec


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


class Handoff(enum.Enum):
    """``--handoff``: how the public socket reaches the child."""

    AUTO = "auto"  # fd for uvicorn or a {fd} placeholder, systemd for gunicorn/hypercorn
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

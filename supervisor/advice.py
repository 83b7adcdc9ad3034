"""Health-check settings that would have let this start pass, for the platform in use.

Owns: turning the start-up time this run measured (or the time it was still
starting when it ended) into the settings a platform needs to wait for it,
within each platform's documented limits: App Runner's interval, timeout and
unhealthy threshold; Kubernetes' startupProbe; Cloud Run's startup probe;
ECS's startPeriod. Each comes with the ``--health-check`` value that models it
in the simulator, and with the alternative that needs no setting at all.
Must not know: how the time was measured or how the advice is shown. Pure.

The time a check allows is the time of the probe that would be its last
failure: failures count from the first probe after the grace (``grace``,
ECS's startPeriod, Cloud Run's initialDelaySeconds), and the check fails at
the ``unhealthy``-th. An app ready when that probe is sent answers it; a
starting app answered by a 503 fails it at once, without its timeout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .config import HealthCheckSpec, seconds_text

# A measured start is not the next one (a colder cache, a busier host): the
# settings leave half again as much. A start cut short is only a lower bound:
# twice it, and a measured one will tell the rest.
READY_MARGIN = 1.5
STARTING_MARGIN = 2.0


def allowed_s(spec: HealthCheckSpec) -> float:
    """How long ``spec`` lets an app take to answer (see the module's note)."""
    first_counted = math.ceil(spec.grace_s / spec.interval_s)
    return (first_counted + spec.unhealthy_threshold - 1) * spec.interval_s


@dataclass(frozen=True)
class Advice:
    measured: str  # "ready after 31 s" or "still starting after 20 s"
    needed_s: float  # what the settings below allow at least
    current_s: float  # what the check of this run allowed
    settings: str  # the platform's own settings, in its own words
    health_check: str  # the --health-check value that models them here
    fits: bool  # False when the platform's limits cannot allow ``needed_s``
    alternative: str

    @property
    def enough_already(self) -> bool:
        return self.current_s >= self.needed_s

    def lines(self) -> list[str]:
        if self.enough_already:
            return [f"health-check settings: enough ({self.measured}; the check allows "
                    f"{seconds_text(self.current_s)})"]
        lines = [
            f"health-check settings: {self.measured}, the check allowed "
            f"{seconds_text(self.current_s)}; to allow {seconds_text(self.needed_s)}:",
            f"  {self.settings}",
        ]
        if not self.fits:
            lines.append("  (the most the platform allows, and still short: take the other way)")
        lines += [f"  try it here: --health-check {self.health_check}",
                  f"  or: {self.alternative}"]
        return lines

    def as_json(self) -> dict[str, object]:
        return {
            "measured": self.measured,
            "needed_s": round(self.needed_s, 1),
            "current_s": round(self.current_s, 1),
            "settings": self.settings,
            "health_check": self.health_check,
            "fits": self.fits,
            "alternative": self.alternative,
        }


def wants_advice(cause: str, ready_after_s: Optional[float]) -> bool:
    """Advice is for an app that became ready, or was still starting when the run ended.

    An app that crashed while starting needs a fix, not more time.
    """
    return ready_after_s is not None or cause in ("startup_timeout", "stopped", "stop_timeout")


def advice_lines(data: Mapping[str, Any]) -> list[str]:
    """The lines of an advice kept in a report (``Advice.as_json``)."""
    return Advice(
        measured=str(data["measured"]), needed_s=float(data["needed_s"]),
        current_s=float(data["current_s"]), settings=str(data["settings"]),
        health_check=str(data["health_check"]), fits=bool(data["fits"]),
        alternative=str(data["alternative"]),
    ).lines()


def advise(
    platform_name: Optional[str],
    spec: HealthCheckSpec,
    ready_after_s: Optional[float],
    elapsed_s: float,
    health_path: str = "/healthz",
) -> Advice:
    """The settings for ``platform_name`` (a preset's name; None: the simulator's own).

    ``ready_after_s`` is when the app became ready, None when it never did;
    ``elapsed_s`` is how long it had been starting when the run ended.
    """
    if ready_after_s is not None:
        measured = f"ready after {seconds_text(ready_after_s)}"
        needed = math.ceil(ready_after_s * READY_MARGIN)
    else:
        measured = f"still starting after {seconds_text(elapsed_s)}"
        needed = math.ceil(elapsed_s * STARTING_MARGIN)
    needed = max(needed, 1)
    build = _BUILDERS.get(platform_name or "", _simulator)
    settings, fitted, fits = build(spec, needed)
    alternative = (
        f"let the supervisor's stub answer the platform's check on {health_path} with 200 "
        "while the app starts (--starting-status 200, the default): the check passes at once "
        "and the app takes the port over when it is ready"
    )
    return Advice(measured, float(needed), allowed_s(spec), settings, fitted.describe(), fits,
                  alternative)


def _count(needed: float, spec: HealthCheckSpec, grace: float = 0.0) -> int:
    """The unhealthy threshold that makes ``spec`` (with ``grace``) allow ``needed``."""
    first_counted = math.ceil(grace / spec.interval_s)
    return max(1, math.ceil(needed / spec.interval_s) + 1 - first_counted)


def _with(spec: HealthCheckSpec, **changes: float) -> HealthCheckSpec:
    fields = {
        "protocol": spec.protocol, "path": spec.path, "interval_s": spec.interval_s,
        "timeout_s": spec.timeout_s, "healthy_threshold": spec.healthy_threshold,
        "unhealthy_threshold": spec.unhealthy_threshold, "grace_s": spec.grace_s,
    }
    fields.update(changes)
    return HealthCheckSpec(**fields)  # type: ignore[arg-type]


def _app_runner(spec: HealthCheckSpec, needed: float) -> tuple[str, HealthCheckSpec, bool]:
    # HealthCheckConfiguration: Interval 1-20 s, Timeout 1-20 s, UnhealthyThreshold 1-20.
    interval = min(max(round(spec.interval_s), 1), 20)
    timeout = min(max(round(spec.timeout_s), 1), 20)
    base = _with(spec, interval_s=interval, timeout_s=timeout, grace_s=0.0)
    count = _count(needed, base)
    if count > 20:
        # Longer intervals; at most 19 of 20 s (380 s) before the 20th failure.
        interval = min(20, math.ceil(needed / 19))
        base = _with(base, interval_s=interval)
        count = min(20, _count(needed, base))
    fitted = _with(base, unhealthy_threshold=count)
    return (
        f"App Runner: health check interval {interval} s, timeout {timeout} s, unhealthy "
        f"threshold {count} (HealthCheckConfiguration Interval={interval}, Timeout={timeout}, "
        f"UnhealthyThreshold={count}; allows {seconds_text(allowed_s(fitted))})",
        fitted, allowed_s(fitted) >= needed,
    )


def _kubernetes(spec: HealthCheckSpec, needed: float) -> tuple[str, HealthCheckSpec, bool]:
    period = max(round(spec.interval_s), 1)
    timeout = max(round(spec.timeout_s), 1)
    base = _with(spec, interval_s=period, timeout_s=timeout, grace_s=0.0)
    count = _count(needed, base)
    fitted = _with(base, unhealthy_threshold=count)
    return (
        f"Kubernetes: a startupProbe with periodSeconds: {period}, failureThreshold: {count}, "
        f"timeoutSeconds: {timeout} (failureThreshold x periodSeconds = {count * period} s); "
        "the liveness and readiness probes start after it",
        fitted, True,
    )


def _cloud_run(spec: HealthCheckSpec, needed: float) -> tuple[str, HealthCheckSpec, bool]:
    # Startup probe: periodSeconds 1-240, timeoutSeconds <= periodSeconds,
    # failureThreshold x periodSeconds at most 240 s, initialDelaySeconds 0-240.
    period = 10
    timeout = min(max(round(spec.timeout_s), 1), period)
    base = _with(spec, interval_s=period, timeout_s=timeout, grace_s=0.0)
    count = min(_count(needed, base), 240 // period)
    delay = 0
    if allowed_s(_with(base, unhealthy_threshold=count)) < needed:
        delay = min(240, math.ceil(needed - allowed_s(_with(base, unhealthy_threshold=count))))
        delay = math.ceil(delay / period) * period
    fitted = _with(base, unhealthy_threshold=count, grace_s=float(delay))
    probe = "httpGet" if spec.protocol == "http" else "tcpSocket"
    return (
        f"Cloud Run: a startup probe ({probe}) with periodSeconds: {period}, failureThreshold: "
        f"{count}, timeoutSeconds: {timeout}"
        + (f", initialDelaySeconds: {delay}" if delay else "")
        + f" (allows {seconds_text(allowed_s(fitted))})",
        fitted, allowed_s(fitted) >= needed,
    )


def _ecs(spec: HealthCheckSpec, needed: float) -> tuple[str, HealthCheckSpec, bool]:
    # HealthCheck: interval 5-300 s, timeout 2-60 s, retries 1-10, startPeriod 0-300 s.
    interval = min(max(round(spec.interval_s), 5), 300)
    timeout = min(max(round(spec.timeout_s), 2), 60)
    retries = min(max(spec.unhealthy_threshold, 1), 10)
    base = _with(spec, interval_s=interval, timeout_s=timeout, unhealthy_threshold=retries)
    start = 0
    if allowed_s(_with(base, grace_s=0.0)) < needed:
        start = min(300, math.ceil(needed - allowed_s(_with(base, grace_s=0.0))))
    fitted = _with(base, grace_s=float(start))
    if allowed_s(fitted) < needed:
        fitted = _with(fitted, unhealthy_threshold=min(10, _count(needed, fitted, start)))
    return (
        f"ECS: the container's healthCheck with startPeriod {start}, interval {interval}, "
        f"timeout {timeout}, retries {fitted.unhealthy_threshold} "
        f"(allows {seconds_text(allowed_s(fitted))})",
        fitted, allowed_s(fitted) >= needed,
    )


def _heroku(spec: HealthCheckSpec, needed: float) -> tuple[str, HealthCheckSpec, bool]:
    fitted = _with(spec, grace_s=float(max(spec.grace_s, needed)))
    return (
        "Heroku: the 60 s boot timeout (R10) is not a setting you can change yourself; "
        "with the supervisor in front, $PORT is bound at once and R10 cannot happen",
        fitted, needed <= 60,
    )


def _simulator(spec: HealthCheckSpec, needed: float) -> tuple[str, HealthCheckSpec, bool]:
    fitted = _with(spec, unhealthy_threshold=_count(needed, spec, spec.grace_s))
    return (f"a check every {seconds_text(spec.interval_s)} failing after "
            f"{fitted.unhealthy_threshold} failures", fitted, True)


_BUILDERS = {
    "apprunner": _app_runner,
    "kubernetes": _kubernetes,
    "cloudrun": _cloud_run,
    "ecs": _ecs,
    "heroku": _heroku,
}

"""The platform's decision: probe results in, a health-check result and a verdict out.

Owns: the record of every probe; the state machine that turns probes into
the platform's decision; and that decision in words. Pure: no sockets, no
threads, no clock (``prober`` sends the probes and feeds them in).
Must not know: how a probe is sent, the child, the stub or the report file.

Semantics, as App Runner, ECS and Kubernetes document them:

* A probe is sent every ``interval_s`` from the start (the first at once); it
  succeeds on a TCP connection accepted, or on an HTTP status from 200 to 399,
  within ``timeout_s``.
* ``healthy_threshold`` consecutive successes: the check has PASSED, and the
  platform would have routed traffic and finished the deployment.
* Before that, ``unhealthy_threshold`` consecutive failures: FAILED, the
  deployment is rolled back. Failures of probes sent during the first
  ``grace_s`` seconds do not count (ECS's startPeriod), but a success during
  the grace period does.
* After passing, probing goes on like the platform's for a running service:
  ``unhealthy_threshold`` consecutive failures then make the check UNHEALTHY
  (the platform would replace the instance). ``passed`` is true only while the
  state is PASSED.
* FAILED and UNHEALTHY are final: nothing more is counted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from .config import HealthCheckSpec, seconds_text

# Probes kept in the record; a long run keeps the first and the latest.
MAX_PROBES = 1000


class CheckState(enum.Enum):
    """Where the platform's decision stands; FAILED and UNHEALTHY are final."""

    PENDING = "pending"  # neither threshold reached yet
    PASSED = "passed"  # healthy: the deployment would have succeeded
    FAILED = "failed"  # unhealthy before ever passing: the deployment would fail
    UNHEALTHY = "unhealthy"  # passed, then failed: the instance would be replaced

    @property
    def final(self) -> bool:
        return self in (CheckState.FAILED, CheckState.UNHEALTHY)


class ProbeKind(enum.Enum):
    """What happened to one probe; the verdict groups failures by it."""

    OK = "ok"
    HTTP_STATUS = "http_status"  # answered, with a status outside 200-399
    TIMEOUT = "timeout"
    REFUSED = "refused"
    ERROR = "error"  # reset, protocol error, anything else


@dataclass(frozen=True)
class Probe:
    at_s: float  # when it was sent, in seconds since the check started
    duration_s: float
    ok: bool
    kind: ProbeKind
    detail: str  # "HTTP 200", "HTTP 503", "timed out (2 s)", "connection refused"
    answered_by: Optional[str]  # "stub", "app", or None when unknown or nobody answered
    counted: bool = True  # False for a failure inside the grace period

    def as_report(self) -> dict[str, object]:
        return {
            "at_s": round(self.at_s, 3),
            "duration_s": round(self.duration_s, 3),
            "ok": self.ok,
            "detail": self.detail,
            "answered_by": self.answered_by,
            "counted": self.counted,
        }


@dataclass(frozen=True)
class HealthCheckResult:
    passed: bool
    checks: int
    failures: int
    reason: str
    answered_by: Optional[str]  # who answered the probe that decided, or the last one
    probes: tuple[Probe, ...]
    state: CheckState = CheckState.PENDING
    # The probes that made the decision (the run of successes or of failures).
    decisive: tuple[Probe, ...] = ()
    passed_at_s: Optional[float] = None  # when it first became healthy

    @property
    def final(self) -> bool:
        return self.state.final

    def as_report(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "checks": self.checks,
            "failures": self.failures,
            "reason": self.reason,
            "answered_by": self.answered_by,
            "state": self.state.value,
            "passed_at_s": None if self.passed_at_s is None else round(self.passed_at_s, 3),
            "probes": [probe.as_report() for probe in self.probes],
        }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class ProbeRecord:
    """The state machine over probes: every probe in, the platform's decision out."""

    def __init__(self, spec: HealthCheckSpec) -> None:
        self.spec = spec
        self.state = CheckState.PENDING
        self.probes: list[Probe] = []
        self.checks = 0
        self.failures = 0
        self.passed_at_s: Optional[float] = None
        self._streak: list[Probe] = []  # the current run of counted results of one kind
        self._decisive: tuple[Probe, ...] = ()

    def add(self, probe: Probe) -> bool:
        """Record ``probe``; True when the state changed."""
        if probe.at_s < self.spec.grace_s and not probe.ok:
            probe = Probe(
                probe.at_s, probe.duration_s, False, probe.kind, probe.detail,
                probe.answered_by, counted=False,
            )
        self.checks += 1
        if not probe.ok:
            self.failures += 1
        if len(self.probes) >= MAX_PROBES:
            # Keep the start and the latest: drop from the middle.
            del self.probes[MAX_PROBES // 2]
        self.probes.append(probe)
        if self.state.final or not probe.counted:
            return False
        if self._streak and self._streak[-1].ok != probe.ok:
            self._streak = []
        self._streak.append(probe)
        before = self.state
        if probe.ok and self.state is CheckState.PENDING:
            if len(self._streak) >= self.spec.healthy_threshold:
                self.state = CheckState.PASSED
                self.passed_at_s = probe.at_s + probe.duration_s
                self._decisive = tuple(self._streak)
        elif not probe.ok and len(self._streak) >= self.spec.unhealthy_threshold:
            if self.state is CheckState.PENDING:
                self.state = CheckState.FAILED
                self._decisive = tuple(self._streak)
            elif self.state is CheckState.PASSED:
                self.state = CheckState.UNHEALTHY
                self._decisive = tuple(self._streak)
        return self.state is not before

    def result(self) -> HealthCheckResult:
        decisive = self._decisive
        last = self.probes[-1] if self.probes else None
        deciding = decisive[-1] if decisive else last
        return HealthCheckResult(
            passed=self.state is CheckState.PASSED,
            checks=self.checks,
            failures=self.failures,
            reason=self._reason(),
            answered_by=deciding.answered_by if deciding is not None else None,
            probes=tuple(self.probes),
            state=self.state,
            decisive=decisive,
            passed_at_s=self.passed_at_s,
        )

    def _reason(self) -> str:
        if self.state is CheckState.PASSED:
            return (
                f"{_plural(len(self._decisive), 'consecutive health check')} succeeded "
                f"({_details(self._decisive)}) by {seconds_text(self.passed_at_s or 0.0)}"
            )
        if self.state.final:
            return _failure_phrase(self._decisive)
        if not self.probes:
            return "no health check was sent"
        last = self.probes[-1]
        return (
            f"undecided after {_plural(self.checks, 'health check')} "
            f"({self.failures} failed); the last: {last.detail}"
        )


def _details(probes: tuple[Probe, ...]) -> str:
    seen: dict[str, int] = {}
    for probe in probes:
        seen[probe.detail] = seen.get(probe.detail, 0) + 1
    if len(seen) == 1:
        return next(iter(seen))
    return ", ".join(f"{n} {detail}" for detail, n in seen.items())


def _failure_words(probe: Probe) -> str:
    if probe.kind is ProbeKind.HTTP_STATUS:
        return f"answered {probe.detail}"
    if probe.kind is ProbeKind.REFUSED:
        return "were refused (nothing listening)"
    if probe.kind is ProbeKind.TIMEOUT:
        return probe.detail  # "timed out (2 s)"
    return f"failed ({probe.detail})"


def _failure_phrase(probes: tuple[Probe, ...]) -> str:
    """'5 consecutive health checks timed out (2 s) between 0 s and 22 s'."""
    if not probes:
        return "no health check failed"
    words = {_failure_words(p) for p in probes}
    what = next(iter(words)) if len(words) == 1 else f"failed ({_details(probes)})"
    if len(probes) == 1:
        what = what.replace("were refused", "was refused")
    start = probes[0].at_s
    end = probes[-1].at_s + probes[-1].duration_s
    text = f"{_plural(len(probes), 'consecutive health check')} {what}"
    text += f" between {seconds_text(start)} and {seconds_text(end)}"
    if {p.answered_by for p in probes} == {"stub"}:
        text += " (answered by the supervisor's stub while the app was not ready)"
    return text


def verdict_text(
    platform_name: Optional[str],
    result: HealthCheckResult,
    spec: HealthCheckSpec,
    where: Optional[str],
) -> str:
    """The platform's decision in one sentence, for the end of the human block.

    ``platform_name`` is the title to show ("App Runner"), None for a check
    given by hand. ``where`` is where the app was when the check failed (a
    file:line and function from a stack dump), None when unknown; it is added
    to every verdict but a pass.
    """
    who = platform_name or "A platform running this health check"
    if result.state is CheckState.PASSED:
        text = f"{who} would have passed this deployment: {result.reason}"
        if result.answered_by == "stub":
            text += (
                "; the supervisor's stub answered, so the platform saw a live container "
                "while the app was still starting"
            )
        return text
    if result.state is CheckState.FAILED:
        text = f"{who} would have failed this deployment: {result.reason}"
    elif result.state is CheckState.UNHEALTHY:
        text = (
            f"{who} would have replaced this instance: {result.reason}, "
            f"after the check had passed at {seconds_text(result.passed_at_s or 0.0)}"
        )
    else:
        check = "HTTP " + spec.path if spec.protocol == "http" else "TCP"
        text = (
            f"{who} had not decided yet ({check} every {seconds_text(spec.interval_s)}, "
            f"healthy after {spec.healthy_threshold}, failed after "
            f"{spec.unhealthy_threshold}): {result.reason}"
        )
    if where:
        text += f"; the app was still in {where}"
    return text


# -- the whole run --------------------------------------------------------------


class Deployment(enum.Enum):
    """What the platform would have done with this deployment, the whole run considered."""

    PASSED = "passed"  # it would have finished the deployment, and the app still runs
    FAILED = "failed"  # it would have rolled the deployment back
    REPLACED = "replaced"  # it would have finished it, then replaced the instance
    UNDECIDED = "undecided"  # the run was stopped before the platform decided


@dataclass(frozen=True)
class ChildEnd:
    """How and when the child ended, as the verdict needs it.

    Times count from the start of the health check (a few ms after the spawn).
    ``requested`` is true when the run was stopped from outside (a stop signal
    forwarded to the child): the end is then nobody's failure.
    """

    at_s: float
    how: str  # "exit code 1, python_exception", "SIGKILL, oom_killed"
    requested: bool = False
    ready_at_s: Optional[float] = None  # when the app itself could answer; None if never

    @classmethod
    def of(
        cls,
        at_s: float,
        exit_code: Optional[int],
        signal: Optional[str],
        cause: str,
        requested: bool = False,
        ready_at_s: Optional[float] = None,
    ) -> ChildEnd:
        status = f"exit code {exit_code}" if exit_code is not None else (signal or "ended")
        return cls(at_s, f"{status}, {cause}", requested, ready_at_s)


@dataclass(frozen=True)
class RunVerdict:
    """The platform's decision over the whole run, with the sentence that says it."""

    deployment: Deployment
    text: str  # the verdict line of the human block

    @property
    def passed(self) -> bool:
        return self.deployment is Deployment.PASSED


def watch_after_passing_s(spec: HealthCheckSpec) -> float:
    """How long a platform still watches a new instance after its check first passed.

    The time its check needs to see the instance fail (``unhealthy_threshold``
    probes, one ``interval`` apart): a container that exits within it would
    fail the deployment, not just be replaced later.
    """
    return spec.interval_s * spec.unhealthy_threshold


def decide(
    platform_name: Optional[str],
    result: HealthCheckResult,
    spec: HealthCheckSpec,
    where: Optional[str],
    end: Optional[ChildEnd],
) -> RunVerdict:
    """The platform's decision from its probes and from how the child ended.

    ``end`` is None while the child still runs. A platform fails a
    deployment whose container exits before the check passes, after a pass
    that only the supervisor's stub gave (the app itself never answered), or
    inside ``watch_after_passing_s`` of the pass; a later exit replaces the
    instance. A requested stop changes nothing: the probes decide alone.
    """
    who = platform_name or "A platform running this health check"
    state = result.state
    text = verdict_text(platform_name, result, spec, where)
    if state is CheckState.FAILED:
        return RunVerdict(Deployment.FAILED, text)
    if state is CheckState.UNHEALTHY:
        return RunVerdict(Deployment.REPLACED, text)
    if end is None or end.requested:
        if state is CheckState.PASSED:
            return RunVerdict(Deployment.PASSED, text)
        return RunVerdict(Deployment.UNDECIDED, text)
    exited = f"the app exited ({end.how}) at {seconds_text(end.at_s)}"
    passed_at = result.passed_at_s
    window = watch_after_passing_s(spec)
    if state is CheckState.PENDING or passed_at is None:
        why = f"{exited}, before the health check passed"
    elif end.ready_at_s is None:
        why = (
            f"{exited} without ever becoming ready; the health check passed at "
            f"{seconds_text(passed_at)} only on the supervisor's stub's answers"
        )
    elif end.at_s - passed_at <= window:
        why = (
            f"{exited}, {seconds_text(max(0.0, end.at_s - passed_at))} after the health check "
            f"passed, inside the {seconds_text(window)} the platform watches a new instance "
            f"({_plural(spec.unhealthy_threshold, 'check')} {seconds_text(spec.interval_s)} "
            "apart)"
        )
    else:
        return RunVerdict(
            Deployment.REPLACED,
            f"{who} would have passed this deployment at {seconds_text(passed_at)}, then "
            f"replaced the instance: {exited}",
        )
    text = f"{who} would have failed this deployment: {why}"
    if where:
        text += f"; the app was in {where}"
    return RunVerdict(Deployment.FAILED, text)


def health_check_report(
    result: HealthCheckResult, verdict: RunVerdict, spec: HealthCheckSpec
) -> dict[str, object]:
    """The report's ``health_check`` section: ``passed`` is the verdict's, never the probes'."""
    data = result.as_report()
    data.update(
        passed=verdict.passed,
        deployment=verdict.deployment.value,
        verdict=verdict.text,
        spec=spec.describe(),
    )
    return data

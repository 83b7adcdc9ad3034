"""Health-check settings that would have passed, checked against the check's own decision."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.advice import advice_lines, advise, allowed_s, wants_advice
from supervisor.config import HealthCheckSpec, parse_health_check
from supervisor.platforms import PLATFORMS
from supervisor.verdict import CheckState, Probe, ProbeKind, ProbeRecord

APP_RUNNER_HTTP = parse_health_check("http:/healthz", base=PLATFORMS["apprunner"].health_check)


def decision(spec: HealthCheckSpec, ready_at_s: float) -> CheckState:
    """The check's decision for an app that answers 503 until ``ready_at_s``, then 200."""
    record = ProbeRecord(spec)
    at = 0.0
    while not record.state.final and record.state is not CheckState.PASSED:
        ready = at >= ready_at_s
        kind = ProbeKind.OK if ready else ProbeKind.HTTP_STATUS
        record.add(Probe(at, 0.001, ready, kind, "HTTP 200" if ready else "HTTP 503", "stub"))
        at += spec.interval_s
    return record.state


def test_allowed_time_matches_the_checks_own_decision() -> None:
    assert allowed_s(APP_RUNNER_HTTP) == 20.0
    # Ready just before the last failing probe passes; just after, fails.
    assert decision(APP_RUNNER_HTTP, 20.0) is CheckState.PASSED
    assert decision(APP_RUNNER_HTTP, 20.5) is CheckState.FAILED


def test_app_runner_advice_for_a_start_of_31_seconds() -> None:
    advice = advise("apprunner", APP_RUNNER_HTTP, 31.0, 31.0)
    assert advice.lines()[:3] == [
        "health-check settings: ready after 31 s, the check allowed 20 s; to allow 47 s:",
        "  App Runner: health check interval 5 s, timeout 2 s, unhealthy threshold 11 "
        "(HealthCheckConfiguration Interval=5, Timeout=2, UnhealthyThreshold=11; allows 50 s)",
        "  try it here: --health-check http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=11",
    ]
    assert advice.lines()[3].startswith("  or: let the supervisor's stub answer")
    assert advice.fits and advice.as_json()["needed_s"] == 47.0


def test_a_start_cut_short_is_given_twice_its_time() -> None:
    advice = advise("kubernetes", PLATFORMS["kubernetes"].health_check, None, 20.0)
    assert advice.measured == "still starting after 20 s"
    assert advice.needed_s == 40.0
    assert advice.settings == (
        "Kubernetes: a startupProbe with periodSeconds: 10, failureThreshold: 5, timeoutSeconds: "
        "1 (failureThreshold x periodSeconds = 50 s); the liveness and readiness probes start "
        "after it")
    assert advice.health_check == "http:/healthz,interval=10,timeout=1,healthy=1,unhealthy=5"


def test_enough_already_is_one_line() -> None:
    assert advise("ecs", PLATFORMS["ecs"].health_check, 2.0, 2.0).lines() == [
        "health-check settings: enough (ready after 2 s; the check allows 60 s)"]


@pytest.mark.parametrize(("name", "seconds"), [("apprunner", 300), ("cloudrun", 480),
                                               ("ecs", 600)])
def test_past_a_platforms_limits_the_advice_says_so(name: str, seconds: float) -> None:
    spec = PLATFORMS[name].health_check
    advice = advise(name, spec, seconds, seconds)
    assert not advice.fits
    assert "still short" in "\n".join(advice.lines())


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(PLATFORMS)), ready=st.floats(0.5, 300.0),
       measured=st.booleans())
def test_applied_to_the_simulator_the_advice_passes_a_start_of_the_same_length(
    name: str, ready: float, measured: bool
) -> None:
    spec = PLATFORMS[name].health_check
    if name == "apprunner":
        spec = APP_RUNNER_HTTP
    advice = advise(name, spec, ready if measured else None, ready)
    fitted = parse_health_check(advice.health_check)
    assert fitted.problem() is None
    if advice.fits:
        assert allowed_s(fitted) >= advice.needed_s
        assert decision(fitted, ready) is CheckState.PASSED


def test_advice_is_for_a_slow_start_not_a_crash() -> None:
    assert wants_advice("exited", 3.0)
    assert wants_advice("startup_timeout", None) and wants_advice("stopped", None)
    assert not wants_advice("python_exception", None)
    assert not wants_advice("oom_killed", None)


def test_the_reports_advice_gives_the_same_lines() -> None:
    advice = advise("apprunner", APP_RUNNER_HTTP, 31.0, 31.0)
    assert advice_lines(advice.as_json()) == advice.lines()

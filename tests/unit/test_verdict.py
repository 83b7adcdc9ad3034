"""The platform's decision from probe results, without sockets or threads."""

from __future__ import annotations

from supervisor.config import HealthCheckSpec
from supervisor.verdict import (
    MAX_PROBES,
    CheckState,
    Probe,
    ProbeKind,
    ProbeRecord,
    verdict_text,
)

APP_RUNNER_HTTP = HealthCheckSpec("http", "/healthz", 5.0, 2.0, 1, 5)


def ok(at_s: float, by: str = "app") -> Probe:
    return Probe(at_s, 0.01, True, ProbeKind.OK, "HTTP 200", by)


def failed(at_s: float, kind: ProbeKind = ProbeKind.HTTP_STATUS, detail: str = "HTTP 503",
           by: str = "stub") -> Probe:
    return Probe(at_s, 0.01, False, kind, detail, by)


def record(spec: HealthCheckSpec, *probes: Probe) -> ProbeRecord:
    tally = ProbeRecord(spec)
    for probe in probes:
        tally.add(probe)
    return tally


def test_the_healthy_threshold_passes_and_says_when() -> None:
    spec = HealthCheckSpec("http", "/healthz", 5.0, 2.0, 2, 3)
    tally = ProbeRecord(spec)
    assert not tally.add(ok(0.0))
    assert tally.add(ok(5.0))  # the change of state is reported once
    result = tally.result()
    assert result.state is CheckState.PASSED and result.passed
    assert result.passed_at_s == 5.01
    assert result.reason == "2 consecutive health checks succeeded (HTTP 200) by 5 s"


def test_a_failure_breaks_a_run_of_successes() -> None:
    spec = HealthCheckSpec("http", "/healthz", 5.0, 2.0, 2, 3)
    result = record(spec, ok(0), failed(5), ok(10)).result()
    assert result.state is CheckState.PENDING
    assert result.reason == "undecided after 3 health checks (1 failed); the last: HTTP 200"


def test_the_unhealthy_threshold_fails_naming_the_stub() -> None:
    result = record(APP_RUNNER_HTTP, *(failed(t) for t in (0, 5, 10, 15, 20))).result()
    assert result.state is CheckState.FAILED and result.final and not result.passed
    assert result.reason == (
        "5 consecutive health checks answered HTTP 503 between 0 s and 20 s "
        "(answered by the supervisor's stub while the app was not ready)"
    )
    assert verdict_text("App Runner", result, APP_RUNNER_HTTP, None).startswith(
        "App Runner would have failed this deployment: 5 consecutive")


def test_mixed_failures_are_counted_by_kind() -> None:
    spec = HealthCheckSpec("tcp", "", 1.0, 1.0, 1, 3)
    refused = failed(0, ProbeKind.REFUSED, "connection refused", by="")
    timeout = failed(1, ProbeKind.TIMEOUT, "timed out (1 s)", by="")
    result = record(spec, refused, timeout, failed(2, ProbeKind.REFUSED, "connection refused",
                                                   by="")).result()
    assert result.reason == (
        "3 consecutive health checks failed (2 connection refused, 1 timed out (1 s)) "
        "between 0 s and 2 s"
    )
    one = HealthCheckSpec("tcp", "", 1.0, 1.0, 1, 1)
    assert record(one, refused).result().reason.startswith(
        "1 consecutive health check was refused (nothing listening)")


def test_failures_inside_the_grace_do_not_count_but_a_success_does() -> None:
    spec = HealthCheckSpec("tcp", "", 1.0, 1.0, 1, 1, grace_s=10.0)
    tally = record(spec, *(failed(t, ProbeKind.REFUSED, "connection refused") for t in range(10)))
    assert tally.state is CheckState.PENDING
    assert tally.result().failures == 10
    assert not any(p.counted for p in tally.result().probes)
    tally.add(ok(9.5))
    assert tally.state is CheckState.PASSED


def test_failures_after_passing_replace_the_instance() -> None:
    spec = HealthCheckSpec("http", "/healthz", 10.0, 1.0, 1, 3)
    result = record(spec, ok(0), ok(10), failed(20), failed(30), failed(40)).result()
    assert result.state is CheckState.UNHEALTHY and not result.passed
    text = verdict_text("Kubernetes", result, spec, "app.py:3 in handler")
    assert text == (
        "Kubernetes would have replaced this instance: 3 consecutive health checks answered "
        "HTTP 503 between 20 s and 40 s (answered by the supervisor's stub while the app was "
        "not ready), after the check had passed at 0.01 s; the app was still in app.py:3 in "
        "handler"
    )


def test_a_final_state_counts_nothing_more() -> None:
    spec = HealthCheckSpec("tcp", "", 1.0, 1.0, 1, 1)
    tally = record(spec, failed(0))
    assert not tally.add(ok(1))
    assert tally.state is CheckState.FAILED
    assert tally.result().checks == 2


def test_a_long_run_keeps_the_first_and_the_latest_probes() -> None:
    spec = HealthCheckSpec("tcp", "", 1.0, 1.0, 1, 1)
    tally = record(spec, *(ok(float(t)) for t in range(MAX_PROBES + 10)))
    probes = tally.result().probes
    assert len(probes) == MAX_PROBES
    assert probes[0].at_s == 0.0 and probes[-1].at_s == MAX_PROBES + 9
    assert tally.result().checks == MAX_PROBES + 10


def test_an_undecided_check_names_its_settings() -> None:
    result = record(APP_RUNNER_HTTP, failed(0)).result()
    assert verdict_text(None, result, APP_RUNNER_HTTP, None) == (
        "A platform running this health check had not decided yet (HTTP /healthz every 5 s, "
        "healthy after 1, failed after 5): undecided after 1 health check (1 failed); "
        "the last: HTTP 503"
    )
    assert record(APP_RUNNER_HTTP).result().reason == "no health check was sent"

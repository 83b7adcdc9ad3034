"""The platform's decision from probe results, without sockets or threads."""

from __future__ import annotations

from supervisor.config import HealthCheckSpec
from supervisor.verdict import (
    MAX_PROBES,
    CheckState,
    ChildEnd,
    Deployment,
    Probe,
    ProbeKind,
    ProbeRecord,
    decide,
    health_check_report,
    verdict_text,
    watch_after_passing_s,
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


# -- the whole run: how the child ended counts too ------------------------------------


def passed_on(by: str) -> ProbeRecord:
    return record(APP_RUNNER_HTTP, ok(0.0, by=by))


def test_a_crash_at_import_after_the_stubs_pass_fails_the_deployment() -> None:
    result = passed_on("stub").result()
    end = ChildEnd.of(0.6, 1, None, "python_exception")
    verdict = decide("App Runner", result, APP_RUNNER_HTTP, "app/main.py:3 in <module>", end)
    assert verdict.deployment is Deployment.FAILED and not verdict.passed
    assert verdict.text == (
        "App Runner would have failed this deployment: the app exited (exit code 1, "
        "python_exception) at 0.6 s without ever becoming ready; the health check passed at "
        "0.01 s only on the supervisor's stub's answers; the app was in app/main.py:3 in "
        "<module>"
    )
    section = health_check_report(result, verdict, APP_RUNNER_HTTP)
    assert section["passed"] is False and section["deployment"] == "failed"
    assert section["state"] == "passed"  # what the probes alone said
    assert section["verdict"] == verdict.text
    assert section["spec"] == "http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=5"


def test_an_exit_before_any_pass_fails_the_deployment() -> None:
    result = record(APP_RUNNER_HTTP, failed(0.0)).result()
    verdict = decide(None, result, APP_RUNNER_HTTP, None,
                     ChildEnd.of(0.4, None, "SIGKILL", "oom_killed"))
    assert verdict.deployment is Deployment.FAILED
    assert verdict.text == (
        "A platform running this health check would have failed this deployment: the app "
        "exited (SIGKILL, oom_killed) at 0.4 s, before the health check passed"
    )


def test_an_exit_soon_after_the_app_became_ready_fails_the_deployment() -> None:
    assert watch_after_passing_s(APP_RUNNER_HTTP) == 25.0
    result = passed_on("app").result()
    end = ChildEnd.of(20.0, 0, None, "exited", ready_at_s=2.0)
    verdict = decide("App Runner", result, APP_RUNNER_HTTP, None, end)
    assert verdict.deployment is Deployment.FAILED
    assert verdict.text == (
        "App Runner would have failed this deployment: the app exited (exit code 0, exited) "
        "at 20 s, 20 s after the health check passed, inside the 25 s the platform watches a "
        "new instance (5 checks 5 s apart)"
    )


def test_an_exit_long_after_passing_replaces_the_instance() -> None:
    result = passed_on("app").result()
    end = ChildEnd.of(600.0, None, "SIGSEGV", "fatal_signal", ready_at_s=2.0)
    verdict = decide("App Runner", result, APP_RUNNER_HTTP, None, end)
    assert verdict.deployment is Deployment.REPLACED and not verdict.passed
    assert verdict.text == (
        "App Runner would have passed this deployment at 0.01 s, then replaced the instance: "
        "the app exited (SIGSEGV, fatal_signal) at 600 s"
    )


def test_a_requested_stop_leaves_the_decision_to_the_probes() -> None:
    stopped = ChildEnd.of(3.0, None, "SIGTERM", "stopped", requested=True, ready_at_s=1.0)
    passed = decide("ECS", passed_on("app").result(), APP_RUNNER_HTTP, None, stopped)
    assert passed.deployment is Deployment.PASSED and passed.passed
    assert passed.text.startswith("ECS would have passed this deployment: 1 consecutive")
    pending = decide("ECS", record(APP_RUNNER_HTTP).result(), APP_RUNNER_HTTP, None, stopped)
    assert pending.deployment is Deployment.UNDECIDED
    assert pending.text.startswith("ECS had not decided yet")


def test_a_running_app_that_passed_passes() -> None:
    verdict = decide("App Runner", passed_on("app").result(), APP_RUNNER_HTTP, None, None)
    assert verdict.deployment is Deployment.PASSED


def test_a_failed_or_unhealthy_check_decides_whatever_the_end() -> None:
    end = ChildEnd.of(30.0, 1, None, "exit_code")
    failing = record(APP_RUNNER_HTTP, *(failed(t) for t in (0, 5, 10, 15, 20))).result()
    assert decide(None, failing, APP_RUNNER_HTTP, None, end).deployment is Deployment.FAILED
    spec = HealthCheckSpec("http", "/healthz", 10.0, 1.0, 1, 1)
    unhealthy = record(spec, ok(0), failed(10)).result()
    assert decide(None, unhealthy, spec, None, end).deployment is Deployment.REPLACED

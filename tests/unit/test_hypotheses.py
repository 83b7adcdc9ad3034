"""The usual guesses about a failure, each confirmed or ruled out from a report."""

from __future__ import annotations

from typing import Any

from supervisor.hypotheses import (
    Finding,
    RunEvidence,
    hypotheses,
    hypothesis_lines,
    start_budget,
)

MIB = 1024 * 1024
APP_RUNNER = {"health_check": "http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=5",
              "network": "open", "limits": {"memory_bytes": 512 * MIB, "cpus": 1.0},
              "startup_timeout_s": 120.0}


def report(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cause": "exit_code", "exit_code": 1, "signal": None, "ready_after_s": None,
        "uptime_s": 0.6, "exception": None, "stderr_tail": "", "signals_received": [],
        "memory": {"peak_rss_bytes": 43 * MIB, "cgroup_peak_bytes": 40 * MIB,
                   "cgroup_limit_bytes": 512 * MIB, "oom_kills": 0},
        "conditions": APP_RUNNER,
    }
    data.update(fields)
    return data


def found(data: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {h.name: (h.finding.value, h.evidence)
            for h in hypotheses(RunEvidence.from_report(data))}


def exception(type_: str, value: str, *frames: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "value": value, "frames": list(frames), "chain": []}


def frame(filename: str, function: str, lineno: int = 1, module: Any = None) -> dict[str, Any]:
    return {"filename": filename, "lineno": lineno, "function": function, "module": module}


def test_the_budget_is_the_last_probe_the_check_allows() -> None:
    assert start_budget(APP_RUNNER) == ("the health check", 20.0)
    cloud_run = {"health_check": "tcp,interval=1,timeout=1,healthy=1,unhealthy=1,grace=239"}
    assert start_budget(cloud_run) == ("the health check", 239.0)
    assert start_budget({"startup_timeout_s": 120.0}) == ("--startup-timeout", 120.0)
    assert start_budget({}) is None


def test_a_crash_at_import() -> None:
    data = report(cause="python_exception", exception=exception(
        "ModuleNotFoundError", "No module named 'twilio'",
        frame("/app/main.py", "<module>"), frame("/app/sms.py", "<module>")))
    assert found(data) == {
        "out of memory": ("ruled out", "exit 1 is not an OOM kill (that would be SIGKILL, 137, "
                          "with the counter risen); the OOM counter did not rise; "
                          "peak 43 MiB of 512 MiB"),
        "start-up too slow": ("ruled out", "it ended (exit 1) at 0.6 s, before the 20 s the "
                              "health check allows: it did not run out of time"),
        "import error": ("confirmed", "ModuleNotFoundError: No module named 'twilio'"),
        "missing configuration": ("ruled out", "the traceback ends in ModuleNotFoundError: "
                                  "No module named 'twilio'"),
        "network needed at start-up": ("ruled out", "no socket or DNS frame in the traceback "
                                       "(ModuleNotFoundError: No module named 'twilio')"),
        "native crash": ("ruled out", "exit 1: the process ended itself, no fatal signal"),
        "killed from outside": ("ruled out", "exit 1: it ended itself"),
    }


def test_an_oom_kill() -> None:
    data = report(cause="oom_killed", exit_code=None, signal="SIGKILL", uptime_s=3.2,
                  oom_evidence="cgroup oom_kill counter rose by 1",
                  memory={"peak_rss_bytes": 500 * MIB, "cgroup_peak_bytes": 512 * MIB,
                          "cgroup_limit_bytes": 512 * MIB, "oom_kills": 1})
    result = found(data)
    assert result["out of memory"] == (
        "confirmed", "SIGKILL (137) and cgroup oom_kill counter rose by 1; peak 512 MiB of "
        "512 MiB")
    assert result["native crash"] == ("ruled out", "killed by SIGKILL, not a crash signal")
    assert result["killed from outside"] == ("ruled out", "the kernel's OOM killer ended it")
    assert result["import error"] == ("no evidence", "no traceback")
    assert result["start-up too slow"][0] == "ruled out"


def test_a_plain_kill_minus_9() -> None:
    data = report(cause="killed", exit_code=None, signal="SIGKILL", ready_after_s=1.5,
                  uptime_s=40.0)
    result = found(data)
    assert result["out of memory"] == (
        "ruled out", "SIGKILL, but the OOM counter did not rise; peak 43 MiB of 512 MiB")
    assert result["killed from outside"] == (
        "confirmed", "SIGKILL without OOM evidence, and not from the supervisor")
    assert result["start-up too slow"] == (
        "ruled out", "ready after 1.5 s, within the 20 s the health check allows")
    assert result["import error"] == (
        "ruled out", "the app became ready after 1.5 s: its imports had completed")


def test_missing_configuration_from_os_environ() -> None:
    data = report(cause="python_exception", exception=exception(
        "KeyError", "'CONFIG_PORT'", frame("/app/config.py", "fetch"),
        frame("<frozen os>", "__getitem__", 679, "os")))
    assert found(data)["missing configuration"] == (
        "confirmed", "KeyError: 'CONFIG_PORT', read from os.environ")
    assert found(data)["import error"][0] == "ruled out"


def test_a_pydantic_validation_error_names_its_fields() -> None:
    tail = ("Traceback (most recent call last):\n  File \"/app/settings.py\", line 9\n"
            "pydantic_core._pydantic_core.ValidationError: 2 validation errors for Settings\n"
            "database_url\n  Field required [type=missing, input_value={}, input_type=dict]\n"
            "api_key\n  Field required [type=missing, input_value={}, input_type=dict]\n"
            "    For further information visit https://errors.pydantic.dev/2.5/v/missing\n")
    data = report(cause="python_exception", stderr_tail=tail, exception=exception(
        "pydantic_core._pydantic_core.ValidationError", "2 validation errors for Settings\n"
        "database_url\n  Field required"))
    assert found(data)["missing configuration"] == (
        "confirmed", "pydantic_core._pydantic_core.ValidationError: 2 validation errors for "
        "Settings (fields: database_url, api_key)")


def test_the_network_at_start_up_under_no_network() -> None:
    data = report(cause="python_exception", conditions={**APP_RUNNER, "network": "cut"},
                  exception=exception(
                      "ConnectionRefusedError", "[Errno 111] Connection refused",
                      frame("/app/config.py", "fetch_remote_config", 8),
                      frame("/usr/lib/python3.11/socket.py", "create_connection", 851)))
    assert found(data)["network needed at start-up"] == (
        "confirmed", "ConnectionRefusedError: [Errno 111] Connection refused in "
        "/usr/lib/python3.11/socket.py:851 in create_connection; --no-network was in force")


def test_a_hang_in_dns_seen_by_the_last_stack_sample() -> None:
    stack = {"threads": [{"name": "MainThread", "frames": [
        frame("/app/main.py", "<module>"),
        frame("/usr/lib/python3.11/socket.py", "getaddrinfo", 962)]}]}
    data = report(cause="startup_timeout", exit_code=None, signal="SIGKILL", uptime_s=122.0,
                  last_stack=stack, conditions={"startup_timeout_s": 120.0, "network": "open"})
    result = found(data)
    assert result["network needed at start-up"] == (
        "confirmed", "the last stack sample was in /usr/lib/python3.11/socket.py:962 in "
        "getaddrinfo")
    assert result["start-up too slow"] == (
        "confirmed", "not ready after 122 s; --startup-timeout allows 120 s")
    assert result["killed from outside"] == (
        "ruled out", "the supervisor stopped it: not ready in time")


def test_a_segfault_in_a_native_wheel() -> None:
    data = report(cause="fatal_signal", exit_code=None, signal="SIGSEGV", exception=exception(
        "FatalError", "Fatal Python error: Segmentation fault", frame("/app/ext.py", "call")))
    result = found(data)
    assert result["native crash"] == (
        "confirmed", "SIGSEGV: FatalError: Fatal Python error: Segmentation fault")
    assert result["out of memory"] == (
        "ruled out", "killed by SIGSEGV, not SIGKILL; peak 43 MiB of 512 MiB")


def test_a_slow_start_stopped_by_the_platform() -> None:
    data = report(cause="stopped", exit_code=None, signal="SIGTERM", uptime_s=59.0,
                  signals_received=[{"signal": "SIGTERM", "at_s": 58.9}])
    result = found(data)
    assert result["start-up too slow"] == (
        "confirmed", "still starting after 59 s; the health check allows 20 s")
    assert result["killed from outside"] == (
        "confirmed", "SIGTERM reached the supervisor and was forwarded: a stop, not a crash")


def test_without_a_limit_the_shared_cgroups_peak_is_not_the_apps() -> None:
    data = report(memory={"peak_rss_bytes": 43 * MIB, "cgroup_peak_bytes": 900 * MIB,
                          "cgroup_limit_bytes": None, "oom_kills": 0},
                  conditions={"network": "open"})
    assert found(data)["out of memory"][1].endswith("peak 43 MiB, no limit")


def test_the_lines_are_aligned_under_a_title() -> None:
    lines = hypothesis_lines(hypotheses(RunEvidence.from_report(report())))
    assert lines[0] == "hypotheses:"
    assert lines[1].startswith("  out of memory               ruled out    exit 1 is not")
    assert len(lines) == 8
    assert all(f.value in ("confirmed", "ruled out", "no evidence") for f in Finding)

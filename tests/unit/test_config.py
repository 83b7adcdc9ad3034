"""Value parsers: durations, sizes, limits and the health-check specification."""

from __future__ import annotations

import pytest

from supervisor.config import (
    HealthCheckSpec,
    parse_cpu_limit,
    parse_duration,
    parse_health_check,
    parse_memory_limit,
    parse_size,
    seconds_text,
)
from supervisor.errors import UsageError

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("--x", text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("512M", 512 << 20), ("1G", 1 << 30), ("536870912", 536870912),
                       ("1.5GiB", 3 << 29)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size("--x", text) == size


@pytest.mark.parametrize("text", ["12X", "", "-1M", "0"])
def test_bad_sizes_name_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="--memory-limit"):
        parse_size("--memory-limit", text)


def test_limit_values_are_parsed_and_refused_with_one_line() -> None:
    assert parse_memory_limit("--memory-limit", "256M") == 256 * MIB
    assert parse_cpu_limit("--cpu-limit", "0.25") == 0.25
    for call, text in ((parse_memory_limit, "0"), (parse_memory_limit, "1M"),
                       (parse_memory_limit, "12X"), (parse_cpu_limit, "abc"),
                       (parse_cpu_limit, "0"), (parse_cpu_limit, "-1"), (parse_cpu_limit, "nan")):
        with pytest.raises(UsageError) as caught:
            call("--limit", text)  # type: ignore[operator]
        assert repr(text) in str(caught.value)
        assert "--limit" in str(caught.value)


@pytest.mark.parametrize(("value", "text"), [
    (0.0, "0 s"), (0.05, "0.05 s"), (0.3, "0.3 s"), (2.0, "2 s"), (2.5, "2.5 s"), (25.4, "25 s"),
])
def test_seconds_are_written_as_a_person_reads_them(value: float, text: str) -> None:
    assert seconds_text(value) == text
    assert parse_duration("--x", seconds_text(value, bare=True), allow_zero=True) == pytest.approx(
        value, abs=0.5)


# -- the health check ---------------------------------------------------------------


def test_parse_health_check_reads_every_setting() -> None:
    parsed = parse_health_check("http:/healthz,interval=5,timeout=2,healthy=1,unhealthy=5,grace=10")
    assert parsed == HealthCheckSpec("http", "/healthz", 5.0, 2.0, 1, 5, 10.0)
    assert parse_health_check(parsed.describe()) == parsed
    assert parsed.problem() is None


def test_parse_health_check_takes_durations_with_units_and_app_runner_defaults() -> None:
    parsed = parse_health_check("tcp,interval=500ms")
    assert parsed == HealthCheckSpec("tcp", "", 0.5, 2.0, 1, 5, 0.0)
    assert parse_health_check("http").path == "/"


def test_parse_health_check_keeps_the_preset_for_what_is_not_given() -> None:
    preset = HealthCheckSpec("tcp", "", 30.0, 5.0, 1, 3, 0.0)
    parsed = parse_health_check("http:/ready,timeout=1", base=preset)
    assert parsed == HealthCheckSpec("http", "/ready", 30.0, 1.0, 1, 3, 0.0)


@pytest.mark.parametrize("text", [
    "", "udp", "http:healthz", "tcp:/x", "http:/x,interval=abc", "http:/x,healthy=0",
    "http:/x,retries=3", "http:/x,interval", "http:/x,timeout=1,timeout=2", "http:/a b",
    "http:/x,unhealthy=1001",
])
def test_parse_health_check_rejects_bad_input_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_health_check(text)
    assert "--health-check" in str(caught.value)
    assert caught.value.status == 2


@pytest.mark.parametrize(("spec", "problem"), [
    (HealthCheckSpec("udp", "", 5, 2, 1, 5), "protocol"),
    (HealthCheckSpec("tcp", "", 0, 2, 1, 5), "positive"),
    (HealthCheckSpec("tcp", "", 5, 2, 0, 5), "at least 1"),
    (HealthCheckSpec("http", "healthz", 5, 2, 1, 5), "start with /"),
])
def test_a_spec_no_platform_could_run_says_why(spec: HealthCheckSpec, problem: str) -> None:
    assert problem in (spec.problem() or "")

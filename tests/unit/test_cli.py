"""The command line and SUPERVISOR_* variables, parsed into one Config."""

from __future__ import annotations

import pytest

from supervisor.cli import parse_args
from supervisor.config import HealthCheckSpec, LogFormat
from supervisor.errors import UsageError

MIB = 1024 * 1024


def test_flag_wins_over_environment_variable() -> None:
    config = parse_args(["--stop-timeout", "3s", "true"], {"SUPERVISOR_STOP_TIMEOUT": "9"})
    assert config.stop_timeout_s == 3.0
    config = parse_args(["true"], {"SUPERVISOR_STOP_TIMEOUT": "9", "SUPERVISOR_KILL_GROUP": "1"})
    assert config.stop_timeout_s == 9.0
    assert config.kill_group


def test_double_dash_is_optional_when_the_command_has_no_dash() -> None:
    assert parse_args(["uvicorn", "--port", "1"], {}).command == ("uvicorn", "--port", "1")
    assert parse_args(["--", "-weird"], {}).command == ("-weird",)
    assert parse_args(["--log-format=json", "--", "x"], {}).log_format is LogFormat.JSON


def test_a_platform_lays_its_defaults_under_the_flags_and_says_which() -> None:
    config = parse_args(["--platform", "apprunner", "--memory-limit", "512M", "true"], {})
    assert config.platform == "App Runner"
    assert config.platform_name == "apprunner"
    assert config.memory_limit == 512 * MIB  # the flag wins
    assert config.cpu_limit == 1.0  # the preset
    assert config.health_check == HealthCheckSpec("tcp", "", 5.0, 2.0, 1, 5, 0.0)
    assert config.from_preset == ("cpu_limit", "health_check")


def test_an_explicit_health_check_keeps_the_presets_timing() -> None:
    config = parse_args(["--platform", "cloudrun", "--health-check", "http:/healthz", "true"],
                        {"SUPERVISOR_CPU_LIMIT": "0.5"})
    assert config.health_check == HealthCheckSpec("http", "/healthz", 1.0, 1.0, 1, 1, 239.0)
    assert config.cpu_limit == 0.5
    assert config.from_preset == ("memory_limit", "startup_timeout_s", "stop_timeout_s")
    assert config.stop_timeout_s == 8.0  # 2 s inside Cloud Run's 10 s


def test_a_health_check_alone_has_no_platform() -> None:
    config = parse_args(["--health-check", "tcp,interval=1", "true"], {})
    assert config.platform is None and config.platform_name is None
    assert config.from_preset == ()
    assert config.health_check == HealthCheckSpec("tcp", "", 1.0, 2.0, 1, 5, 0.0)


@pytest.mark.parametrize("args", [
    ["--platform", "nope", "true"],
    ["--health-check", "udp", "true"],
    ["--memory-limit", "1M", "true"],
    ["--cpu-limit", "0", "true"],
])
def test_bad_reproduction_values_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse_args(args, {})
    assert caught.value.status == 2
    assert args[0] in str(caught.value)

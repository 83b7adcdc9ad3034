"""Platform presets: each resolves to its documented defaults; unknown names are refused."""

from __future__ import annotations

import pytest

from supervisor.config import HealthCheckSpec, parse_health_check
from supervisor.errors import UsageError
from supervisor.platforms import PLATFORMS, Platform, get_platform

MIB = 1024 * 1024


@pytest.mark.parametrize("name", ["apprunner", "cloudrun", "heroku", "ecs", "kubernetes"])
def test_each_preset_resolves_by_name(name: str) -> None:
    platform = get_platform(name)
    assert isinstance(platform, Platform)
    assert platform.name == name
    assert platform.title
    # Every preset's check can be written back as a --health-check value.
    assert parse_health_check(platform.health_check.describe()) == platform.health_check


def test_names_are_forgiving_about_case_and_punctuation() -> None:
    assert get_platform("AppRunner") is PLATFORMS["apprunner"]
    assert get_platform("cloud-run") is PLATFORMS["cloudrun"]
    assert get_platform("k8s") is PLATFORMS["kubernetes"]


def test_unknown_platform_is_refused_listing_the_known_names() -> None:
    with pytest.raises(UsageError) as caught:
        get_platform("nope")
    assert str(caught.value) == (
        "--platform: invalid value 'nope': expected one of "
        "apprunner, cloudrun, ecs, heroku, kubernetes"
    )
    assert caught.value.status == 2


def test_app_runner_defaults() -> None:
    platform = PLATFORMS["apprunner"]
    assert platform.health_check == HealthCheckSpec("tcp", "", 5.0, 2.0, 1, 5, 0.0)
    assert platform.memory_limit == 2048 * MIB
    assert platform.cpu_limit == 1.0


def test_cloud_run_waits_240_seconds_for_the_port() -> None:
    platform = PLATFORMS["cloudrun"]
    check = platform.health_check
    assert check.protocol == "tcp"
    # The first failure that counts comes at 240 s: grace, then one interval.
    assert check.grace_s + check.interval_s * check.unhealthy_threshold == 240.0
    assert (platform.memory_limit, platform.cpu_limit) == (512 * MIB, 1.0)
    assert (platform.port_env, platform.default_port) == ("PORT", 8080)
    assert platform.stop_timeout_s == 10.0


def test_heroku_gives_60_seconds_to_bind_and_30_to_stop() -> None:
    platform = PLATFORMS["heroku"]
    check = platform.health_check
    assert check.grace_s + check.interval_s * check.unhealthy_threshold == 60.0
    assert platform.startup_timeout_s == 60.0
    assert platform.stop_timeout_s == 30.0
    assert platform.memory_limit == 512 * MIB
    assert platform.port_env == "PORT"


def test_ecs_and_kubernetes_probe_defaults() -> None:
    ecs = PLATFORMS["ecs"].health_check
    assert (ecs.interval_s, ecs.timeout_s, ecs.unhealthy_threshold, ecs.grace_s) == (30, 5, 3, 0)
    k8s = PLATFORMS["kubernetes"].health_check
    assert (k8s.interval_s, k8s.timeout_s, k8s.healthy_threshold, k8s.unhealthy_threshold) == (
        10, 1, 1, 3)
    assert PLATFORMS["ecs"].stop_timeout_s == PLATFORMS["kubernetes"].stop_timeout_s == 30.0
    assert PLATFORMS["kubernetes"].memory_limit is None


def test_an_explicit_check_keeps_the_presets_timing() -> None:
    preset = PLATFORMS["apprunner"].health_check
    assert parse_health_check("http:/healthz", base=preset) == HealthCheckSpec(
        "http", "/healthz", 5.0, 2.0, 1, 5, 0.0)

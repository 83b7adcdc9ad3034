"""End to end: crash events delivered to a real Sentry-compatible server (bugsink).

bugsink drops attachments, so they are checked against the test receiver in
test_sentry.py; here the point is that a real server ingests the events,
titles the issues right and groups by the supervisor's fingerprint.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.sentry_delivery import deliver
from supervisor.sentry_event import attachments_for, build_event
from tests.bugsink import Bugsink
from tests.unit.test_sentry import (
    ENVIRONMENT,
    RELEASE,
    make_report,
    run_child,
    synthetic_report,
    write_app,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("bugsink") is None or importlib.util.find_spec("gunicorn") is None,
        reason="bugsink is not installed (pip install bugsink; it needs Python >= 3.11)",
    ),
]


@pytest.fixture(scope="session")
def bugsink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bugsink]:
    server = Bugsink(tmp_path_factory.mktemp("bugsink"))
    try:
        yield server.start()
    finally:
        server.close()


def test_crashes_appear_in_bugsink_as_issues_with_the_right_titles(
    bugsink: Bugsink, tmp_path: Path
) -> None:
    write_app(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/main.py": "from app.integrations import sms\n",
            "app/integrations/__init__.py": "",
            "app/integrations/sms.py": "from twilio.http.http_client import TwilioHttpClient\n",
        },
    )
    crash = run_child(tmp_path, ["app.main"])
    import_error = make_report(crash, cause="python_exception")
    # The same crash in another container, with other memory figures.
    again = make_report(crash, cause="python_exception")
    again["memory"]["peak_rss_bytes"] = 3 * crash.maxrss
    oom = synthetic_report(
        "oom_killed",
        signal="SIGKILL",
        status=137,
        memory={
            "peak_rss_bytes": 490 << 20,
            "cgroup_peak_bytes": 511 << 20,
            "cgroup_limit_bytes": 512 << 20,
            "oom_kills": 1,
            "samples": [],
        },
    )

    deliveries = [
        deliver(
            build_event(r, release=RELEASE, environment=ENVIRONMENT),
            attachments_for(r),
            dsn=bugsink.dsn,
            timeout_s=5.0,
        )
        for r in (import_error, again, oom)
    ]

    assert all(d.delivered for d in deliveries), (deliveries, bugsink.log()[-2000:])
    issues = {i["calculated_type"]: i for i in bugsink.wait_for_issues(2)}
    assert set(issues) == {"ModuleNotFoundError", "OOMKilled"}, bugsink.log()[-2000:]
    assert issues["ModuleNotFoundError"]["calculated_value"] == "No module named 'twilio'"
    assert issues["ModuleNotFoundError"]["digested_event_count"] == 2
    assert issues["OOMKilled"]["calculated_value"].startswith(
        "killed by the OOM killer at 511 MiB of 512 MiB"
    )
    assert issues["OOMKilled"]["events_at"] == [RELEASE]
    events = bugsink.events(issues["ModuleNotFoundError"]["id"])
    assert {e["event_id"].replace("-", "") for e in events} == {
        d.event_id for d in deliveries[:2]
    }

"""Deaths at start-up, read from what real servers printed, on a virtual clock.

The stderr is the real servers' (tests/samples/servers/, captured by
tests/samples/capture_servers.py); the clock is virtual, so "10 s after the
start" passes without waiting. Also here: the causes of a server that waits
on or exits 0 after its worker's death, and the pure parts of ``bindtrap``.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import List, Tuple

import pytest

from supervisor import bindtrap
from supervisor.causes import Cause, Ending, classify
from supervisor.child import ExitStatus
from supervisor.reactor import Reactor
from supervisor.startcrash import AFTER_FIRST_DEATH_S, WINDOW_S, StartupCrashWatch
from supervisor.tracebacks import ParsedTraceback, find_fatal_traceback
from tests.conftest import VirtualClock

SERVERS = Path(__file__).resolve().parent.parent / "samples" / "servers"


def sample(name: str) -> str:
    return (SERVERS / f"{name}.txt").read_text()


class Watched:
    def __init__(self, reloads: bool = False) -> None:
        self.clock = VirtualClock(100.0)
        self.reactor = Reactor(clock=self.clock, advance=self.clock.advance)
        self.concluded: List[Tuple[ParsedTraceback, int, float]] = []
        self.crashes: List[ParsedTraceback] = []
        self.watch = StartupCrashWatch(
            self.reactor, reloads=reloads, started=self.clock.now,
            on_conclude=lambda tb, deaths: self.concluded.append((tb, deaths, self.clock.now)),
            on_crash=self.crashes.append,
        )

    def feed(self, text: str, piece: int = 700) -> None:
        """In pieces, as a pipe delivers it, and let the stream go quiet."""
        data = text.encode()
        for start in range(0, len(data), piece):
            self.watch.chunk(data[start : start + piece])
        self.run_for(0.5)

    def run_for(self, seconds: float) -> None:
        end = self.clock.now + seconds
        self.reactor.call_at(end, lambda: None)
        while self.clock.now < end:
            self.reactor.run_once()


def test_workers_that_keep_dying_are_concluded_at_the_third_death() -> None:
    watched = Watched()
    text = sample("uvicorn_workers_crash_loop")
    starts = [n for n in range(len(text)) if text.startswith("Process SpawnProcess-", n)]
    assert len(starts) >= 4  # uvicorn's master restarted the workers; they died again
    watched.feed(text[: starts[2]])
    assert watched.watch.deaths == 2 and not watched.concluded
    watched.feed(text[starts[2] : starts[3]])
    watched.feed(text[starts[3] :])  # what comes after the conclusion changes nothing
    [(traceback, deaths, _)] = watched.concluded
    assert deaths == 3
    assert traceback.summary() == "RuntimeError: boom at import"
    frame = traceback.innermost_app_frame()
    assert frame is not None and (Path(frame.filename).name, frame.lineno) == ("app.py", 3)


def test_one_death_is_concluded_ten_seconds_after_the_start() -> None:
    watched = Watched()
    text = sample("uvicorn_workers_crash_loop")
    second = text.index("Process SpawnProcess-", text.index("Process SpawnProcess-") + 1)
    first = text[:second]
    watched.feed(first)
    assert watched.watch.deaths == 1 and not watched.concluded
    watched.run_for(WINDOW_S)
    [(traceback, deaths, at)] = watched.concluded
    assert deaths == 1 and traceback.exception.value == "boom at import"
    assert at == pytest.approx(100.0 + WINDOW_S, abs=0.01)


def test_a_late_first_death_still_leaves_the_server_time_to_exit_by_itself() -> None:
    watched = Watched()
    watched.run_for(WINDOW_S + 5)
    text = sample("hypercorn_exits_0")
    watched.feed(text)
    assert not watched.concluded
    watched.run_for(AFTER_FIRST_DEATH_S)
    assert len(watched.concluded) == 1


def test_under_a_reloader_each_crash_is_said_and_nothing_is_concluded() -> None:
    watched = Watched(reloads=True)
    watched.feed(sample("uvicorn_reload"))
    watched.feed(sample("uvicorn_reload"))  # a second save, a second crash
    watched.run_for(WINDOW_S * 3)
    assert [tb.summary() for tb in watched.crashes] == ["RuntimeError: boom at import"] * 2
    assert not watched.concluded


def test_logged_and_handled_tracebacks_are_not_deaths() -> None:
    watched = Watched()
    logged = ("ERROR:root:cannot reach the database, retrying\n"
              "Traceback (most recent call last):\n"
              '  File "/srv/app/db.py", line 4, in connect\n'
              "ConnectionRefusedError: [Errno 111] Connection refused\n")
    handled = ("ERROR:    Exception in ASGI application\n"
               "Traceback (most recent call last):\n"
               '  File "/srv/app/main.py", line 9, in home\n'
               "ValueError: bad\n")
    for _ in range(5):
        watched.feed(logged + handled)
    watched.run_for(WINDOW_S * 2)
    assert watched.watch.deaths == 0 and not watched.concluded


def test_gunicorns_worker_failure_is_a_death() -> None:
    watched = Watched()
    watched.feed(sample("gunicorn_uvicorn_worker"))
    assert watched.watch.deaths == 1
    assert watched.watch.last is not None
    assert watched.watch.last.exception.value == "boom at import"  # once, not twice


def test_nothing_after_stop() -> None:
    watched = Watched()
    watched.watch.stop()
    watched.feed(sample("uvicorn_workers_crash_loop"))
    watched.run_for(WINDOW_S * 2)
    assert watched.watch.deaths == 0 and not watched.concluded


# -- causes ---------------------------------------------------------------------------------


def test_a_server_that_exits_0_after_its_workers_traceback_is_python_exception() -> None:
    outcome = classify(Ending(exit=ExitStatus(code=0, signal=None),
                              stderr_tail=sample("hypercorn_exits_0")))
    assert outcome.cause is Cause.PYTHON_EXCEPTION
    assert outcome.summary == "RuntimeError: boom at import"
    assert outcome.status == 1  # never 0 after a crash
    # A clean exit with a traceback long before it is still just "exited".
    quiet = sample("hypercorn_exits_0") + "".join(f"INFO: tick {n}\n" for n in range(40))
    assert classify(Ending(exit=ExitStatus(code=0, signal=None),
                           stderr_tail=quiet)).cause is Cause.EXITED


def test_a_server_stopped_for_dying_at_start_up_reports_the_apps_exception() -> None:
    tail = sample("uvicorn_workers_crash_loop") + "INFO:     Shutting down\n" * 30
    crash = find_fatal_traceback(sample("uvicorn_workers_crash_loop"))
    assert crash is not None
    outcome = classify(Ending(exit=ExitStatus(code=None, signal=signal.SIGTERM),
                              stderr_tail=tail, startup_crash=crash))
    assert (outcome.cause, outcome.summary) == (Cause.PYTHON_EXCEPTION,
                                                "RuntimeError: boom at import")
    assert outcome.status == 1 and outcome.traceback is crash


@pytest.mark.parametrize("name", ["gunicorn_sync", "gunicorn23_sync_haltserver",
                                  "gunicorn_uvicorn_worker", "granian_workers", "daphne"])
def test_servers_that_exit_on_their_workers_death(name: str) -> None:
    outcome = classify(Ending(exit=ExitStatus(code=3, signal=None), stderr_tail=sample(name)))
    assert (outcome.cause, outcome.summary) == (Cause.PYTHON_EXCEPTION,
                                                "RuntimeError: boom at import")
    assert outcome.traceback is not None
    assert outcome.traceback.exception.value == "boom at import"


# -- bindtrap's pure parts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "machine", "platform", "reason"),
    [
        ("6.8.0-45-generic", "x86_64", "linux", None),
        ("5.9.0", "aarch64", "linux", None),
        ("5.10.0-28-cloud-amd64", "x86_64", "linux", None),
        ("5.4.0-150-generic", "x86_64", "linux", "Linux 5.4.0-150-generic is older than 5.9"),
        ("4.4.0", "x86_64", "linux", "Linux 4.4.0 is older than 5.9"),  # gVisor says this
        ("6.1.0", "ppc64le", "linux", "no seccomp bind interception on ppc64le"),
        ("23.1.0", "arm64", "darwin", "not Linux"),
    ],
)
def test_where_the_bind_can_be_answered(release: str, machine: str, platform: str,
                                        reason: str) -> None:
    assert bindtrap.unavailable_reason(release, machine, platform) == reason


def test_the_filter_notifies_on_bind_of_the_native_abi_only() -> None:
    program = bindtrap.filter_program(0xC000003E, 49, "little")
    assert len(program) == 6 * 8
    ops = [program[i : i + 8] for i in range(0, len(program), 8)]
    assert int.from_bytes(ops[1][4:], "little") == 0xC000003E  # the architecture
    assert int.from_bytes(ops[3][4:], "little") == 49  # bind on x86_64
    assert int.from_bytes(ops[4][4:], "little") == 0x7FC00000  # SECCOMP_RET_USER_NOTIF
    assert int.from_bytes(ops[5][4:], "little") == 0x7FFF0000  # SECCOMP_RET_ALLOW


def test_a_refusal_is_told_apart_from_a_command_that_cannot_run() -> None:
    assert bindtrap.refusal(bindtrap.REFUSED + "seccomp(2) failed: EPERM") == \
        "seccomp(2) failed: EPERM"
    assert bindtrap.refusal("No such file or directory") is None

"""Start-up is part of the product: nothing heavy runs before the child is spawned."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.conftest import CHILDREN, PYTHON, ROOT, Run, free_port, wait_for

# What may not be imported on the path from exec to spawning the child. typing,
# re and dataclasses cost about 12 ms together; the others far more.
HEAVY = ("typing", "re", "dataclasses", "inspect", "json", "threading", "asyncio",
         "psutil", "httpx", "sentry_sdk", "supervisor.health", "supervisor.memory",
         "supervisor.tracebacks", "supervisor.causes", "supervisor.report")


def modules_after(code: str) -> set[str]:
    # -S: without site, whatever site-packages' .pth files import does not hide ours.
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}; "
        "loaded = sorted(sys.modules); import json; print(json.dumps(loaded))"
    )
    out = subprocess.run([PYTHON, "-S", "-c", script], check=True, capture_output=True).stdout
    return set(json.loads(out))


def importtime_modules(stderr: str) -> set[str]:
    """The modules that ``python -X importtime`` says were imported."""
    return {line.rpartition("|")[2].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


def test_the_path_to_spawn_imports_nothing_heavy() -> None:
    loaded = modules_after(
        "import supervisor.__main__, supervisor.cli, supervisor.loop; "
        "from supervisor.cli import parse_args; "
        "parse_args(['--port', '8000', '--stop-timeout', '2s', 'uvicorn', 'app:app'], {}); "
        "import supervisor.handoff as h; h.plan_handoff('auto', ['uvicorn', 'a:b'], None, 8000, "
        "None, {})"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_sentry_sdk_is_not_imported_by_the_sentry_module() -> None:
    loaded = modules_after("import supervisor.sentry_event, supervisor.sentry_delivery")
    assert "sentry_sdk" not in loaded
    assert "httpx" not in loaded


def test_the_command_itself_imports_nothing_before_the_entry_point() -> None:
    # pip's generated entry-point wrappers import `re` first; ours is a plain script.
    done = subprocess.run(
        [PYTHON, "-S", "-X", "importtime", str(ROOT / "scripts" / "supervisor"), "--version"],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True, capture_output=True, text=True,
    )
    imported = importtime_modules(done.stderr)
    assert "supervisor.__main__" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_a_short_command_that_did_its_job_imports_nothing_of_the_report() -> None:
    # `supervisor -- true`, with the stub too: nothing to report, so none of
    # the report's modules is imported on the way out.
    for stub in ([], ["--host", "127.0.0.1", "--port", str(free_port())]):
        done = subprocess.run(
            [PYTHON, "-X", "importtime", "-m", "supervisor", *stub, "--", "true"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )
        imported = importtime_modules(done.stderr)
        assert "supervisor.loop" in imported
        assert not imported & {"supervisor.finish", "supervisor.causes", "supervisor.report",
                               "supervisor.tracebacks", "json"}, stub


# What the supervisor may not hold while the app runs: each stays in its memory
# (RSS) for the app's whole life. typing, dataclasses (with inspect and ast) and
# re are about 1.5 MiB together; threading is a thread's worth more.
HELD_WHILE_RUNNING = ("typing", "dataclasses", "inspect", "ast", "re", "threading", "json",
                      "psutil", "httpx", "sentry_sdk", "supervisor.causes",
                      "supervisor.report", "supervisor.tracebacks", "supervisor.redact")

# The supervisor, with its modules written to a file when it forwards SIGWINCH
# (harmless to the app: ignored by default).
_DUMP_ON_SIGWINCH = """
import signal, sys
from supervisor import pid1
from supervisor.__main__ import entry
modules_path = sys.argv.pop(1)
forward = pid1.SignalInbox.forward
def dump_then_forward(self, signum):
    if signum == signal.SIGWINCH:
        with open(modules_path, "w") as out:
            out.write("\\n".join(sorted(sys.modules)))
    return forward(self, signum)
pid1.SignalInbox.forward = dump_then_forward
entry()
"""


def test_while_the_app_runs_the_supervisor_holds_nothing_heavy(tmp_path: Path) -> None:
    modules_file = tmp_path / "modules.txt"
    port = free_port()
    # -S: what site-packages' .pth files import would hide what the supervisor does.
    argv = [PYTHON, "-S", "-c", _DUMP_ON_SIGWINCH, str(modules_file), "--host", "127.0.0.1",
            "--port", str(port), "--", PYTHON, "-m", "uvicorn", "--app-dir", str(CHILDREN),
            "web_hello:app", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = Run(process)
    try:
        run.wait_for_stderr("ready after", timeout=60)
        # After the hand-off, the supervisor's one look at the app's health path.
        wait_for(lambda: "/healthz" in run.read_stdout_line(timeout=60), timeout=60,
                 what="the supervisor's request for /healthz")
        process.send_signal(signal.SIGWINCH)
        wait_for(lambda: modules_file.exists() and modules_file.read_text(), what="the dump")
    finally:
        process.send_signal(signal.SIGTERM)
        run.finish()
    held = set(modules_file.read_text().split())
    assert "supervisor.watch" in held and "supervisor.memory" in held  # it was running
    assert not held & set(HELD_WHILE_RUNNING), sorted(held & set(HELD_WHILE_RUNNING))

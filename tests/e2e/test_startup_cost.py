"""Start-up is part of the product: nothing heavy runs before the child is spawned."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import PYTHON, ROOT, free_port

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
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
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
        imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "supervisor.loop" in imported
        assert not imported & {"supervisor.finish", "supervisor.causes", "supervisor.report",
                               "supervisor.tracebacks", "json"}, stub

"""Parsing tracebacks and faulthandler dumps that real interpreters printed.

Most inputs come from the running interpreter (tiny scripts run in tmp_path) or
from a real uvicorn; the checked-in samples under samples/tracebacks/ keep the
formats of the other CPython versions (3.9 to 3.13).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.faultdump import FATAL_ERROR_TYPE, find_faulthandler_dump
from supervisor.tracebacks import (
    Frame,
    ParsedException,
    ParsedTraceback,
    find_fatal_traceback,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "tracebacks"
ALL_SAMPLE_TEXTS = [path.read_text() for path in sorted(SAMPLES.glob("*.txt"))]


def child_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DATABASE_URL"))}
    env.update(PYTHON_COLORS="0", PYTHONFAULTHANDLER="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def write(root: Path, relative: str, source: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def run_python(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=child_env(**env),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
    )


def stderr_of(cwd: Path, *args: str) -> str:
    result = run_python(cwd, *args)
    assert result.returncode != 0, result.stderr
    return result.stderr


def fatal(text: str) -> ParsedTraceback:
    parsed = find_fatal_traceback(text)
    assert parsed is not None, text
    return parsed


def where(frame: Optional[Frame]) -> Tuple[str, Optional[int], str]:
    assert frame is not None
    return Path(frame.filename).name, frame.lineno, frame.function


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- tracebacks from the running interpreter ------------------------------------------------


def test_import_error_in_nested_module_names_the_innermost_app_frame(tmp_path: Path) -> None:
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/a.py", "import pkg.b\n")
    write(tmp_path, "pkg/b.py", "import os\nimport nosuchmodule_xyz\n")
    write(tmp_path, "main.py", "import pkg.a\n")

    parsed = fatal(stderr_of(tmp_path, "main.py"))

    assert parsed.exception.type == "ModuleNotFoundError"
    assert parsed.exception.value == "No module named 'nosuchmodule_xyz'"
    assert parsed.summary() == "ModuleNotFoundError: No module named 'nosuchmodule_xyz'"
    assert parsed.chain == ()
    assert where(parsed.innermost_app_frame()) == ("b.py", 2, "<module>")
    assert parsed.innermost_app_frame().context_line == "import nosuchmodule_xyz"  # type: ignore[union-attr]
    assert [Path(f.filename).name for f in parsed.exception.frames] == ["main.py", "a.py", "b.py"]


def test_missing_environment_variable_is_a_key_error_raised_in_app_code(tmp_path: Path) -> None:
    write(
        tmp_path,
        "settings.py",
        """\
        import os

        def database_url():
            return os.environ["DATABASE_URL"]

        database_url()
        """,
    )

    parsed = fatal(stderr_of(tmp_path, "settings.py"))

    assert parsed.summary() == "KeyError: 'DATABASE_URL'"
    # The newest frame is os.py (or <frozen os> from 3.11): not the app's.
    assert not parsed.exception.frames[-1].is_app()
    assert where(parsed.innermost_app_frame()) == ("settings.py", 4, "database_url")
    assert parsed.innermost_app_frame().context_line == 'return os.environ["DATABASE_URL"]'  # type: ignore[union-attr]


def test_explicit_cause_is_in_the_chain_and_a_multi_line_message_is_kept_whole(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "cause.py",
        """\
        def load():
            try:
                return {}["REDIS_URL"]
            except KeyError as exc:
                raise RuntimeError("bad settings:\\n  REDIS_URL missing") from exc

        load()
        """,
    )

    parsed = fatal(stderr_of(tmp_path, "cause.py"))

    assert parsed.exception.type == "RuntimeError"
    assert parsed.exception.value == "bad settings:\n  REDIS_URL missing"
    assert parsed.summary() == "RuntimeError: bad settings:"
    assert [(e.type, e.value) for e in parsed.chain] == [("KeyError", "'REDIS_URL'")]
    assert where(parsed.chain[0].frames[-1]) == ("cause.py", 3, "load")
    assert where(parsed.innermost_app_frame()) == ("cause.py", 5, "load")


def test_implicit_context_is_in_the_chain_oldest_first(tmp_path: Path) -> None:
    write(
        tmp_path,
        "context.py",
        """\
        import json

        def parse(raw):
            try:
                return json.loads(raw)
            except ValueError:
                return int(raw)

        parse("{oops")
        """,
    )

    parsed = fatal(stderr_of(tmp_path, "context.py"))

    assert parsed.exception.type == "ValueError"
    assert parsed.exception.value.startswith("invalid literal for int()")
    assert [e.type for e in parsed.chain] == ["json.decoder.JSONDecodeError"]
    # The JSON error was raised inside the standard library: its app frame is parse().
    assert not parsed.chain[0].frames[-1].is_app()
    assert where(parsed.innermost_app_frame()) == ("context.py", 7, "parse")


def test_syntax_error_in_an_imported_module_points_at_the_bad_line(tmp_path: Path) -> None:
    write(tmp_path, "broken.py", "x = 1\ndef f(:\n    pass\n")
    write(tmp_path, "main.py", "import broken\n")

    parsed = fatal(stderr_of(tmp_path, "main.py"))

    assert parsed.exception.type == "SyntaxError"
    frame = parsed.innermost_app_frame()
    assert where(frame) == ("broken.py", 2, "")
    assert frame is not None and frame.context_line == "def f(:"
    assert where(parsed.exception.frames[0]) == ("main.py", 1, "<module>")


def test_syntax_error_in_the_script_itself_is_found_without_a_header(tmp_path: Path) -> None:
    write(tmp_path, "bad.py", "print('starting')\nif True\n    pass\n")

    text = stderr_of(tmp_path, "bad.py")
    assert "Traceback" not in text

    parsed = fatal(text)
    assert parsed.exception.type == "SyntaxError"
    assert len(parsed.exception.frames) == 1
    assert where(parsed.innermost_app_frame()) == ("bad.py", 2, "")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is new in Python 3.11")
def test_exception_group_keeps_its_direct_sub_exceptions(tmp_path: Path) -> None:
    write(
        tmp_path,
        "group.py",
        """\
        def connect(name):
            raise ConnectionError(f"{name} unreachable")

        def start():
            errors = []
            for name in ("db", "cache"):
                try:
                    connect(name)
                except ConnectionError as exc:
                    errors.append(exc)
            raise ExceptionGroup("startup failed", errors + [ValueError("bad\\nport")])

        start()
        """,
    )

    parsed = fatal(stderr_of(tmp_path, "group.py"))

    assert parsed.summary() == "ExceptionGroup: startup failed (3 sub-exceptions)"
    assert [(e.type, e.value) for e in parsed.exception.group] == [
        ("ConnectionError", "db unreachable"),
        ("ConnectionError", "cache unreachable"),
        ("ValueError", "bad\nport"),
    ]
    assert where(parsed.exception.frames[-1]) == ("group.py", 11, "start")
    # The sub-exceptions were raised below the group: the first one names the culprit.
    assert where(parsed.innermost_app_frame()) == ("group.py", 2, "connect")


def test_recursion_error_with_repeated_frames_is_parsed(tmp_path: Path) -> None:
    write(tmp_path, "deep.py", "def down(n):\n    return down(n + 1)\n\ndown(0)\n")

    text = stderr_of(tmp_path, "deep.py")
    assert "[Previous line repeated" in text

    parsed = fatal(text)
    assert parsed.exception.type == "RecursionError"
    assert where(parsed.innermost_app_frame()) == ("deep.py", 2, "down")
    assert all(f.context_line in ("down(0)", "return down(n + 1)") for f in parsed.exception.frames)


def test_segfault_dump_is_oldest_first_and_names_the_script_function(tmp_path: Path) -> None:
    write(
        tmp_path,
        "crash.py",
        """\
        import ctypes
        import threading
        import time

        def idle():
            time.sleep(30)

        def read_null():
            ctypes.string_at(0)

        threading.Thread(target=idle, daemon=True).start()
        time.sleep(0.05)
        read_null()
        """,
    )

    result = run_python(tmp_path, "crash.py")
    assert result.returncode == -11

    dump = find_faulthandler_dump(result.stderr)
    assert dump is not None
    assert dump.error == "Segmentation fault"
    assert where(dump.current_thread[0]) == ("crash.py", 13, "<module>")
    assert where(dump.innermost_app_frame()) == ("crash.py", 9, "read_null")
    assert not dump.current_thread[-1].is_app()  # ctypes itself
    assert len(dump.other_threads) == 1
    assert any(f.function == "idle" for f in dump.other_threads[0])
    exception = dump.as_exception()
    assert exception.type == FATAL_ERROR_TYPE
    assert exception.value == "Fatal Python error: Segmentation fault"
    assert exception.frames == dump.current_thread
    assert find_fatal_traceback(result.stderr) is None


def test_abort_dump_names_the_aborting_function(tmp_path: Path) -> None:
    write(tmp_path, "abort.py", "import os\n\ndef give_up():\n    os.abort()\n\ngive_up()\n")

    result = run_python(tmp_path, "abort.py")
    assert result.returncode == -6

    dump = find_faulthandler_dump(result.stderr)
    assert dump is not None
    assert dump.error == "Aborted"
    assert [where(f) for f in dump.current_thread] == [
        ("abort.py", 6, "<module>"),
        ("abort.py", 4, "give_up"),
    ]
    assert dump.other_threads == ()


# -- under a real uvicorn --------------------------------------------------------------------

RAISING_LIFESPAN = """\
    def connect_database():
        raise RuntimeError("database unreachable")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            connect_database()
    """

# What Starlette does: catch the error and hand its traceback to uvicorn to log.
REPORTED_LIFESPAN = """\
    import traceback

    def connect_database():
        raise RuntimeError("database unreachable")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            try:
                connect_database()
            except Exception:
                message = traceback.format_exc()
                await send({"type": "lifespan.startup.failed", "message": message})
    """


@pytest.mark.parametrize(
    "source", [RAISING_LIFESPAN, REPORTED_LIFESPAN], ids=["raised", "reported"]
)
def test_uvicorn_lifespan_startup_error_is_the_fatal_traceback(tmp_path: Path, source: str) -> None:
    write(tmp_path, "service.py", source)

    result = run_python(
        tmp_path, "-m", "uvicorn", "service:app", "--lifespan", "on",
        "--host", "127.0.0.1", "--port", str(free_port()),
    )  # fmt: skip

    assert result.returncode == 3, result.stderr
    assert "Application startup failed. Exiting." in result.stderr
    parsed = fatal(result.stderr)
    assert parsed.summary() == "RuntimeError: database unreachable"
    raise_line = source.count("\n", 0, source.index("raise RuntimeError")) + 1
    assert where(parsed.innermost_app_frame()) == ("service.py", raise_line, "connect_database")


REQUEST_ERROR_APP = """\
    import asyncio
    import os
    import signal

    def handle_order():
        raise ValueError("bad order payload")

    async def request_self(port):
        for _ in range(200):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        await reader.read()
        writer.close()
        os.kill(os.getpid(), signal.SIGTERM)

    tasks = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    port = int(os.environ["SERVICE_PORT"])
                    tasks.append(asyncio.get_running_loop().create_task(request_self(port)))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        handle_order()
    """


def test_request_error_logged_by_uvicorn_is_not_why_the_server_stopped(tmp_path: Path) -> None:
    write(tmp_path, "service.py", REQUEST_ERROR_APP)
    port = free_port()

    result = run_python(
        tmp_path, "-m", "uvicorn", "service:app", "--host", "127.0.0.1", "--port", str(port),
        SERVICE_PORT=str(port),
    )  # fmt: skip

    assert "Exception in ASGI application" in result.stderr, result.stderr
    assert "ValueError: bad order payload" in result.stderr
    assert "Finished server process" in result.stderr
    assert find_fatal_traceback(result.stderr) is None

    # A traceback that ends the program after such a logged one is still found.
    crash = stderr_of(tmp_path, "-c", "import nosuchmodule_xyz")
    parsed = fatal(result.stderr + crash)
    assert parsed.exception.type == "ModuleNotFoundError"


def test_logged_request_error_is_skipped_but_an_earlier_fatal_one_is_not_erased(
    tmp_path: Path,
) -> None:
    write(
        tmp_path, "boom.py", "def handler():\n    raise ValueError('request failed')\n\nhandler()\n"
    )
    request_error = stderr_of(tmp_path, "boom.py")
    logged = "ERROR:    Exception in ASGI application\n" + request_error
    callback = (
        "Exception in callback H11Protocol.timeout_keep_alive_handler()\nhandle: <TimerHandle>\n"
    )

    assert (
        find_fatal_traceback("INFO:     Started\n" + logged + "INFO:     Shutting down\n") is None
    )
    assert find_fatal_traceback(callback + request_error) is None
    assert find_fatal_traceback("Exception in thread worker:\n" + request_error) is None
    assert fatal(request_error + logged).exception.value == "request failed"


# -- what else the tail may hold --------------------------------------------------------------


def test_output_after_the_traceback_does_not_join_the_message(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "raise RuntimeError('first line\\nsecond line')\n")
    text = stderr_of(tmp_path, "main.py")
    trailer = (
        "ERROR:    Application startup failed. Exiting.\nINFO:     Finished server process [7]\n"
    )

    parsed = fatal("ERROR:    " + text + trailer)

    assert parsed.exception.value == "first line\nsecond line"


def test_ansi_colours_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "def f():\n    raise KeyError('PORT')\n\nf()\n")
    plain = stderr_of(tmp_path, "main.py")
    # Roughly what 3.13 prints when colours are on.
    coloured = (
        plain.replace("KeyError", "\x1b[1;35mKeyError\x1b[0m", 1)
        .replace('File "', '\x1b[35mFile \x1b[0m\x1b[35m"')
        .replace("'PORT'", "\x1b[35m'PORT'\x1b[0m")
    )
    assert fatal(coloured) == fatal(plain)


def test_tail_that_starts_inside_a_traceback_still_gives_its_exception(tmp_path: Path) -> None:
    write(
        tmp_path,
        "main.py",
        "def a():\n    b()\n\ndef b():\n    raise OSError('disk full')\n\na()\n",
    )
    lines = stderr_of(tmp_path, "main.py").splitlines(keepends=True)

    parsed = fatal("".join(lines[3:]))  # the header and the oldest frame fell off the tail

    assert parsed.summary() == "OSError: disk full"
    assert where(parsed.innermost_app_frame()) == ("main.py", 5, "b")


def test_text_without_a_traceback_gives_nothing() -> None:
    text = "INFO:     Started server process [7]\nKilled\n"
    assert find_fatal_traceback(text) is None
    assert find_faulthandler_dump(text) is None
    assert find_fatal_traceback("") is None
    assert find_faulthandler_dump("") is None


# -- the formats of other versions, kept as samples -------------------------------------------

# file -> (summary, chain types, innermost app frame as (file name, line, function))
TRACEBACK_SAMPLES: Dict[str, Tuple[str, List[str], Tuple[str, int, str]]] = {
    "py39_env_key_error_then_dotted_type.txt": (
        "app.errors.ConfigError: missing settings:", ["KeyError"], ("main.py", 7, "settings"),
    ),
    "py313_env_key_error_then_dotted_type.txt": (
        "app.errors.ConfigError: missing settings:", ["KeyError"], ("main.py", 7, "settings"),
    ),
    "py310_implicit_context.txt": (
        "KeyError: 'missing\\nkey'", ["ZeroDivisionError"], ("ctx.py", 6, "f"),
    ),
    "py39_syntax_error_in_import.txt": ("SyntaxError: invalid syntax", [], ("syn_bad.py", 2, "")),
    "py313_syntax_error_in_script.txt": ("SyntaxError: invalid syntax", [], ("syn_bad.py", 2, "")),
    "py312_recursion.txt": (
        "RecursionError: maximum recursion depth exceeded", [], ("rec.py", 2, "r"),
    ),
    "py313_explicit_cause.txt": ("RuntimeError: config", ["KeyError"], ("chain.py", 6, "load")),
    "py312_exception_group_nested_and_chained.txt": (
        "RuntimeError: wrapped", ["OSError", "ExceptionGroup"], ("grp2.py", 23, "main"),
    ),
    "py312_exception_group_message_without_margin.txt": (
        "ExceptionGroup: startup failed (3 sub-exceptions)", [], ("grp.py", 2, "f"),
    ),
    "py313_exception_group.txt": (
        "ExceptionGroup: startup failed (3 sub-exceptions)", [], ("grp.py", 2, "f"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TRACEBACK_SAMPLES))
def test_sample_traceback_gives_its_exception_chain_and_app_frame(name: str) -> None:
    summary, chain, innermost = TRACEBACK_SAMPLES[name]

    parsed = fatal((SAMPLES / name).read_text())

    assert parsed.summary() == summary
    assert [e.type for e in parsed.chain] == chain
    assert where(parsed.innermost_app_frame()) == innermost


def test_samples_cover_every_file_in_the_directory() -> None:
    dumps = {p.name for p in SAMPLES.glob("*faulthandler*.txt")}
    assert {p.name for p in SAMPLES.glob("*.txt")} == set(TRACEBACK_SAMPLES) | dumps


def test_multi_line_message_and_frames_of_an_older_format_are_exact() -> None:
    parsed = fatal((SAMPLES / "py39_env_key_error_then_dotted_type.txt").read_text())

    assert parsed.exception.value == (
        "missing settings:\n  DATABASE_URL: field required\n  REDIS_URL: field required"
    )
    assert parsed.chain[0].frames[-1] == Frame(
        "/usr/local/lib/python3.9/os.py", 679, "__getitem__", "raise KeyError(key) from None"
    )
    # 3.9 shows only the first line of a call that spans several.
    assert parsed.exception.frames[0].context_line == "return _run_code(code, main_globals, None,"
    assert [f.is_app() for f in parsed.exception.frames] == [False, False, True, True]


def test_exception_group_sub_exceptions_in_each_printed_form() -> None:
    expected = (
        ParsedException("ValueError", "x", ()),
        ParsedException("TypeError", "y\nz", ()),
        ParsedException(
            "ExceptionGroup",
            "inner (1 sub-exception)",
            (),
            (ParsedException("KeyError", "'k'", ()),),
        ),
    )
    for name in ("py312_exception_group_message_without_margin.txt", "py313_exception_group.txt"):
        parsed = fatal((SAMPLES / name).read_text())
        assert parsed.exception.group == expected, name
        assert parsed.exception.frames[0].context_line == "f()"


def test_nested_group_with_its_own_chains_keeps_each_sub_exception() -> None:
    parsed = fatal((SAMPLES / "py312_exception_group_nested_and_chained.txt").read_text())

    group = parsed.chain[-1]
    assert group.value == "outer (2 sub-exceptions)"
    assert [(e.type, e.value) for e in group.group] == [
        ("ExceptionGroup", "inner (1 sub-exception)"),
        ("ValueError", "during"),
    ]
    assert [where(f) for f in group.group[1].frames] == [
        ("grp2.py", 12, "f"),
        ("grp2.py", 7, "sub"),
    ]
    assert group.group[0].group == (ParsedException("KeyError", "'k'", ()),)


def test_faulthandler_dump_with_thread_names_and_extension_modules() -> None:
    dump = find_faulthandler_dump((SAMPLES / "py313_faulthandler_thread_names.txt").read_text())

    assert dump is not None
    assert dump.error == "Segmentation fault"
    assert where(dump.current_thread[0]) == ("uvicorn", 8, "<module>")
    assert where(dump.innermost_app_frame()) == ("stats.py", 12, "summarize")
    assert len(dump.other_threads) == 1
    assert where(dump.other_threads[0][-1]) == ("threading.py", 359, "wait")
    assert dump.as_exception().frames[-1].module == "numpy._core._methods"


def test_faulthandler_dump_without_current_thread_takes_the_main_thread() -> None:
    text = (SAMPLES / "py312_faulthandler_abort_without_current_thread.txt").read_text()

    dump = find_faulthandler_dump(text)

    assert dump is not None
    assert dump.error == "Aborted"
    assert where(dump.innermost_app_frame()) == ("db.py", 22, "connect")
    assert [where(stack[-1]) for stack in dump.other_threads] == [
        ("metrics.py", 19, "flush_forever")
    ]


def test_last_faulthandler_dump_wins() -> None:
    first = (SAMPLES / "py39_faulthandler_segfault.txt").read_text()
    second = (SAMPLES / "py313_faulthandler_thread_names.txt").read_text()

    dump = find_faulthandler_dump(first + second)

    assert dump is not None and where(dump.innermost_app_frame())[0] == "stats.py"


# -- frames ------------------------------------------------------------------------------------

STDLIB = f"{sys.base_prefix}/lib/python{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.mark.parametrize(
    ("filename", "is_app", "module"),
    [
        ("/app/app/main.py", True, None),
        ("app/main.py", True, "app.main"),
        ("/srv/venv/lib/python3.12/site-packages/uvicorn/config.py", False, "uvicorn.config"),
        ("/usr/lib/python3/dist-packages/yaml/__init__.py", False, "yaml"),
        ("/usr/local/lib/python3.9/json/decoder.py", False, "json.decoder"),
        (f"{STDLIB}/asyncio/runners.py", False, "asyncio.runners"),
        ("<frozen importlib._bootstrap>", False, "importlib._bootstrap"),
        ("<string>", False, None),
        ("/usr/local/bin/uvicorn", False, None),
        ("/usr/local/lib/python3.13t/site-packages/x/_native.pyx", False, "x._native"),
    ],
)
def test_frame_knows_app_code_from_python_and_installed_packages(
    filename: str, is_app: bool, module: Optional[str]
) -> None:
    frame = Frame(filename, 1, "f", None)
    assert frame.is_app() is is_app
    assert frame.module == module


def test_summary_of_an_exception_without_message_is_its_type() -> None:
    bare = ParsedTraceback(ParsedException("KeyboardInterrupt", "", ()), ())
    assert bare.summary() == "KeyboardInterrupt"
    assert bare.innermost_app_frame() is None


# -- any input at all ---------------------------------------------------------------------------

MARKERS = [
    "Traceback (most recent call last):",
    "  + Exception Group Traceback (most recent call last):",
    '  File "/app/x.py", line 3, in f',
    '  File "/app/x.py", line 3',
    '  File "/app/x.py", line 7 in f',
    "    | ",
    "  +-+---------------- 1 ----------------",
    "    +------------------------------------",
    "The above exception was the direct cause of the following exception:",
    "Current thread 0x00007f (most recent call first):",
    "Fatal Python error: Segmentation fault",
    "ValueError: x",
    "    ^^^^~~~~",
    "ERROR:    Exception in ASGI application",
    "",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2000))
def test_random_text_never_raises(text: str) -> None:
    find_fatal_traceback(text)
    find_faulthandler_dump(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(MARKERS), st.text(max_size=40)), max_size=60))
def test_lines_of_traceback_vocabulary_in_any_order_never_raise(lines: List[str]) -> None:
    text = "\n".join(lines)
    find_fatal_traceback(text)
    find_faulthandler_dump(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_tracebacks_never_raise(data: st.DataObject) -> None:
    lines = data.draw(st.sampled_from(ALL_SAMPLE_TEXTS)).split("\n")
    for _ in range(data.draw(st.integers(0, 8))):
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "duplicate", "cut", "indent", "insert"]))
        if action == "drop" and len(lines) > 1:
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "cut":
            lines[index] = lines[index][: data.draw(st.integers(0, len(lines[index])))]
        elif action == "indent":
            lines[index] = "  | " + lines[index]
        else:
            lines.insert(index, data.draw(st.text(max_size=30)))
    text = "\n".join(lines)
    find_fatal_traceback(text)
    find_faulthandler_dump(text)


@pytest.mark.parametrize(
    "text",
    [
        'File "' * 11000,
        '  File "x", line 1, in f\n' * 2700,
        "  File \"" + '", line 1, in ' * 4600 + "\n",
        "  + Exception Group Traceback (most recent call last):\n" + "  | x\n" * 10000,
        "".join("  " * d + "+-+---------------- 1 ----------------\n" for d in range(200)) * 5,
        "Traceback (most recent call last):\n" + "    " + " " * 65000 + "x\n",
        "Fatal Python error: x\n" + "Thread 0x1 (most recent call first):\n" * 1800,
        "ValueError: " + "a" * 65000,
        "line " + "9" * 65000,
    ],
    ids=[
        "quotes", "frames-without-exception", "line-markers", "group-margins",
        "nested-separators", "one-long-line", "threads", "long-message", "long-number",
    ],
)  # fmt: skip
def test_worst_case_inputs_of_64_kib_parse_quickly(text: str) -> None:
    started = time.monotonic()
    find_fatal_traceback(text)
    find_faulthandler_dump(text)
    assert time.monotonic() - started < 1.0


# -- as real servers print them (captured by tests/samples/capture_servers.py) -----------

SERVER_SAMPLES = SAMPLES.parent / "servers"


@pytest.mark.parametrize(
    ("sample", "app_file", "line"),
    [
        ("fastapi_run_rich", "main.py", 4),  # typer's rich box
        ("fastapi_run_typer_standard", "main.py", 4),
        ("gunicorn_uvicorn_worker", "app.py", 3),  # the value printed twice
        ("gunicorn_sync", "wsgi.py", 3),
        ("gunicorn23_sync_haltserver", "wsgi.py", 3),  # the arbiter's HaltServer after it
        ("hypercorn_exits_0", "app.py", 3),
        ("uvicorn_workers_crash_loop", "app.py", 3),
        ("uvicorn_reload", "app.py", 3),
        ("granian_workers", "app.py", 3),
        ("daphne", "app.py", 3),
    ],
)
def test_the_apps_own_exception_once_as_each_server_prints_it(
    sample: str, app_file: str, line: int
) -> None:
    parsed = fatal((SERVER_SAMPLES / f"{sample}.txt").read_text())
    assert (parsed.exception.type, parsed.exception.value) == ("RuntimeError", "boom at import")
    assert parsed.summary() == "RuntimeError: boom at import"
    assert where(parsed.innermost_app_frame()) == (app_file, line, "<module>")
    frame = parsed.innermost_app_frame()
    assert frame is not None and frame.context_line == 'raise RuntimeError("boom at import")'


def test_a_rich_box_gives_the_same_traceback_as_the_plain_form() -> None:
    rich = fatal((SERVER_SAMPLES / "fastapi_run_rich.txt").read_text())
    plain = fatal((SERVER_SAMPLES / "fastapi_run_typer_standard.txt").read_text())
    # rich leaves out typer's and click's own frames, and names no frozen module.
    assert [f.function for f in rich.exception.frames] == [
        f.function for f in plain.exception.frames][-len(rich.exception.frames):]
    assert [f.lineno for f in rich.exception.frames] == [
        f.lineno for f in plain.exception.frames][-len(rich.exception.frames):]
    for boxed, printed in zip(rich.exception.frames, plain.exception.frames[-12:]):
        if not printed.filename.startswith("<frozen"):
            assert (boxed.filename, boxed.context_line) == (printed.filename, printed.context_line)
        assert boxed.is_app() == printed.is_app()


def test_a_rich_box_with_a_chain_and_locals() -> None:
    parsed = fatal((SERVER_SAMPLES / "rich_traceback_chained_with_locals.txt").read_text())
    assert parsed.summary() == "RuntimeError: settings file missing: /nonexistent/settings.toml"
    [cause] = parsed.chain
    # rich wrapped this message at 80 columns: the wrap is undone, not kept as a newline.
    assert (cause.type, cause.value) == (
        "FileNotFoundError", "[Errno 2] No such file or directory: '/nonexistent/settings.toml'")
    assert [(f.function, f.lineno) for f in parsed.exception.frames] == [
        ("<module>", 10), ("load_settings", 8)]
    assert where(parsed.innermost_app_frame()) == ("settings.py", 8, "load_settings")
    assert parsed.exception.frames[0].context_line == 'load_settings("/nonexistent/settings.toml")'


def test_a_rich_box_cut_off_or_garbled_is_not_a_traceback() -> None:
    text = (SERVER_SAMPLES / "fastapi_run_rich.txt").read_text()
    box_end = text.index("╰")
    assert find_fatal_traceback(text[:box_end]) is None
    assert find_fatal_traceback(text.replace("│", "")) is None
    # Whatever is cut away, parsing never raises.
    for cut in range(0, len(text), 97):
        find_fatal_traceback(text[cut:])
        find_fatal_traceback(text[:cut])


def test_a_rich_box_logged_as_handled_is_not_fatal() -> None:
    box = (SERVER_SAMPLES / "fastapi_run_rich.txt").read_text()
    assert find_fatal_traceback("ERROR    Exception in ASGI application\n" + box) is None


def test_a_message_that_only_looks_repeated_at_the_start_is_kept() -> None:
    text = 'Traceback (most recent call last):\n  File "/srv/app.py", line 1, in <module>\n' \
           "ValueError: first\nsecond\nfirst line is not repeated\n"
    assert fatal(text).exception.value == "first\nsecond\nfirst line is not repeated"

"""Reproducing the platform's conditions with real files, real cgroups and real namespaces."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from supervisor.errors import UsageError
from supervisor.reproduce import (
    MINIMAL_PATH,
    ChildCgroup,
    check_can_unshare_network,
    docker_equivalent,
    enter_new_network_namespace,
    parse_env_file,
    reproduce_environment,
)
from tests import cgroups
from tests.conftest import child, wait_for

PYTHON = sys.executable
MIB = 1024 * 1024


# -- env files ------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = ".env") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_env_file_reads_every_form_people_keep(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        # a comment, then a blank line

        PLAIN=value
        export EXPORTED=yes
        SPACED = around the equals
        EMPTY=
        TRAILING=kept # a comment after a space
        HASH_INSIDE=a#b
        SINGLE='literal $HOME \\n # not a comment'
        DOUBLE="line one\\nline \\"two\\" \\\\ done" # comment
        URL=postgres://user:p@ss@host:5432/db?sslmode=require
        MULTI="first
        second"
          INDENTED=ok
        PLAIN=later wins
        """)
    assert parse_env_file(path) == {
        "PLAIN": "later wins",
        "EXPORTED": "yes",
        "SPACED": "around the equals",
        "EMPTY": "",
        "TRAILING": "kept",
        "HASH_INSIDE": "a#b",
        "SINGLE": "literal $HOME \\n # not a comment",
        "DOUBLE": 'line one\nline "two" \\ done',
        "URL": "postgres://user:p@ss@host:5432/db?sslmode=require",
        "MULTI": "first\nsecond",
        "INDENTED": "ok",
    }


def test_env_file_accepts_crlf_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"\xef\xbb\xbfA=1\r\nB='two'\r\n")
    assert parse_env_file(str(path)) == {"A": "1", "B": "two"}


@pytest.mark.parametrize(("text", "line", "words"), [
    ("A=1\nB=2\nJUST_A_NAME\n", 3, "expected NAME=VALUE"),
    ("A=1\n1BAD=x\n", 2, "is not a variable name"),
    ("A=1\nWITH-DASH=x\n", 2, "is not a variable name"),
    ("A=1\nQ='open\nB=2\n", 2, "never closed"),
    ('A="closed" extra\n', 1, "after the closing quote"),
    ("=value\n", 1, "is not a variable name"),
])
def test_malformed_env_file_names_the_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        parse_env_file(path)
    message = str(caught.value)
    assert message.startswith(f"--env-file: {path} line {line}: ")
    assert words in message
    assert "\n" not in message
    assert caught.value.status == 2


def test_missing_env_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--env-file: .*nope\.env: no such file"):
        parse_env_file(str(tmp_path / "nope.env"))


def run_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a real child sees: `env -0`, found through the given PATH."""
    output = subprocess.run(["env", "-0"], env=env, capture_output=True, check=True).stdout
    pairs = [item.split(b"=", 1) for item in output.split(b"\0") if item]
    return {k.decode(): v.decode() for k, v in pairs}


def test_clean_env_gives_exactly_the_files_variables_plus_path(tmp_path: Path) -> None:
    values = parse_env_file(write(tmp_path, "DATABASE_URL=sqlite:///x\nexport MODE='prod'\n"))
    base = {"HOME": "/root", "SECRET_ON_LAPTOP": "1", "PATH": "/laptop/bin"}
    env = reproduce_environment(base, values, clean=True)
    assert run_env(env) == {"DATABASE_URL": "sqlite:///x", "MODE": "prod", "PATH": MINIMAL_PATH}


def test_clean_env_keeps_the_files_own_path(tmp_path: Path) -> None:
    values = parse_env_file(write(tmp_path, "PATH=/usr/bin:/bin\nA=1\n"))
    assert run_env(reproduce_environment({"B": "2"}, values, clean=True)) == {
        "PATH": "/usr/bin:/bin", "A": "1"}


def test_without_clean_env_the_file_updates_the_environment(tmp_path: Path) -> None:
    values = parse_env_file(write(tmp_path, "A=from file\n"))
    base = {"A": "old", "B": "kept", "PATH": MINIMAL_PATH}
    env = reproduce_environment(base, values, clean=False)
    assert run_env(env) == {"A": "from file", "B": "kept", "PATH": MINIMAL_PATH}


# -- option values ------------------------------------------------------------------------


def test_the_refusal_names_the_docker_flags_that_impose_the_same_limits() -> None:
    assert docker_equivalent(512 * MIB, 0.25) == "docker run --memory 512m --cpus 0.25"
    assert docker_equivalent(2 << 30, None) == "docker run --memory 2g"


# -- cgroups --------------------------------------------------------------------------------

CGROUP_SKIP = cgroups.unusable_reason()
needs_cgroups = pytest.mark.skipif(CGROUP_SKIP is not None, reason=str(CGROUP_SKIP))


@pytest.fixture
def make_cgroup() -> Iterator[Callable[..., ChildCgroup]]:
    made: list[ChildCgroup] = []

    def make(memory_limit: Optional[int] = None, cpu_limit: Optional[float] = None) -> ChildCgroup:
        group = ChildCgroup.create(memory_limit, cpu_limit)
        made.append(group)
        return group

    yield make
    for group in made:
        group.remove()
        assert not any(os.path.exists(path) for path in group.groups)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def own_cgroup_lines() -> str:
    return Path("/proc/self/cgroup").read_text()


@needs_cgroups
def test_memory_limit_oom_kills_the_child_not_the_supervisor(
    make_cgroup: Callable[..., ChildCgroup], processes: list[subprocess.Popen[bytes]]
) -> None:
    before = own_cgroup_lines()
    group = make_cgroup(memory_limit=256 * MIB)
    assert group.memory is not None
    assert own_cgroup_lines() == before  # the supervisor stays where it was
    baseline = group.memory.read().oom_kills or 0
    process = subprocess.Popen([PYTHON, child("repro_alloc.py"), "300"],
                               preexec_fn=group.join_in_child, stdout=subprocess.PIPE)
    processes.append(process)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert b"allocated" not in out
    after = group.memory.read()
    assert (after.oom_kills or 0) > baseline
    assert after.limit_bytes == 256 * MIB
    assert os.getpid() not in _procs(group)


@needs_cgroups
def test_memory_limit_lets_a_child_below_it_finish(
    make_cgroup: Callable[..., ChildCgroup]
) -> None:
    group = make_cgroup(memory_limit=256 * MIB)
    result = subprocess.run([PYTHON, child("repro_alloc.py"), "64"],
                            preexec_fn=group.join_in_child, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"allocated 64 MiB\n"


@needs_cgroups
def test_cpu_limit_gives_the_child_a_quarter_of_a_core(
    make_cgroup: Callable[..., ChildCgroup]
) -> None:
    group = make_cgroup(cpu_limit=0.25)
    result = subprocess.run([PYTHON, child("repro_busy.py"), "2"],
                            preexec_fn=group.join_in_child, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    cpu, wall = (float(x) for x in result.stdout.split())
    share = cpu / wall
    assert 0.15 <= share <= 0.40, f"{cpu:.2f} CPU-s over {wall:.2f} s = {share:.0%}"


@needs_cgroups
def test_remove_kills_leftovers_and_leaves_no_directory(
    processes: list[subprocess.Popen[bytes]]
) -> None:
    group = ChildCgroup.create(128 * MIB, 0.5)
    assert len(group.groups) >= 1 and all(os.path.isdir(g) for g in group.groups)
    process = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"],
                               preexec_fn=group.join_in_child)
    processes.append(process)
    wait_for(lambda: process.pid in _procs(group), what="the child in its group")
    group.remove()
    assert process.wait(10) == -signal.SIGKILL
    assert not any(os.path.exists(path) for path in group.groups)
    group.remove()  # a second time: nothing to do, and no exception


def _procs(group: ChildCgroup) -> list[int]:
    pids: list[int] = []
    for path in group.groups:
        try:
            pids += [int(x) for x in Path(path, "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            pass
    return pids


def run_as_nobody(action: Callable[[], None]) -> str:
    """Run ``action`` in a forked process with uid nobody; return the UsageError it raised."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked, unprivileged process
        message = b"no error"
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            action()
        except UsageError as exc:
            message = str(exc).encode()
        except BaseException as exc:
            message = f"unexpected {type(exc).__name__}: {exc}".encode()
        finally:
            os.write(write_fd, message)
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")
def test_without_privilege_the_cgroup_is_refused_with_what_to_use_instead() -> None:
    def create() -> None:
        ChildCgroup.create(512 * MIB, 0.25)

    message = run_as_nobody(create)
    assert message.startswith("--memory-limit/--cpu-limit: cannot put the child in a cgroup")
    assert "docker run --memory 512m --cpus 0.25" in message
    assert "\n" not in message


# -- no network --------------------------------------------------------------------------

try:
    check_can_unshare_network()
    NETNS_SKIP: Optional[str] = None
except UsageError as exc:
    NETNS_SKIP = str(exc)
needs_netns = pytest.mark.skipif(NETNS_SKIP is not None, reason=str(NETNS_SKIP))


def netns_report(*args: str) -> dict[str, object]:
    result = subprocess.run([PYTHON, child("repro_netns.py"), *args],
                            preexec_fn=enter_new_network_namespace, capture_output=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@needs_netns
def test_a_child_in_a_new_network_namespace_sees_only_lo_and_it_is_up() -> None:
    report = netns_report()
    assert report["interfaces"] == ["lo"]
    assert report["proc_net_dev"] == ["lo"]
    assert report["lo_up"] is True
    assert report["loopback_works"] is True


@needs_netns
def test_a_server_outside_the_namespace_is_unreachable_from_inside() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # reachable from here
        report = netns_report("127.0.0.1", str(port))
    assert report["connect"] == "ConnectionRefusedError"


@needs_netns
def test_a_listener_bound_outside_keeps_serving_from_inside(
    processes: list[subprocess.Popen[bytes]]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        fd = listener.fileno()
        process = subprocess.Popen([PYTHON, child("repro_accept.py"), str(fd)], pass_fds=[fd],
                                   preexec_fn=enter_new_network_namespace)
        processes.append(process)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=10) as client:
            client.settimeout(10)
            greeting = b""
            deadline = time.monotonic() + 10
            while not greeting.endswith(b"\n") and time.monotonic() < deadline:
                chunk = client.recv(100)
                if not chunk:
                    break
                greeting += chunk
    assert greeting == b"hello from the namespace\n"
    assert process.wait(10) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")
def test_without_privilege_no_network_is_refused_with_one_line() -> None:
    message = run_as_nobody(check_can_unshare_network)
    assert message.startswith("--no-network: cannot give the child a network namespace")
    assert "Operation not permitted" in message
    assert "\n" not in message

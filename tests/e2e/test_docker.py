"""The supervisor as a real container's entrypoint, in a real dockerd.

`.ci/docker.sh` installs Debian's docker.io and mmdebstrap, starts a dockerd
of the project's own and builds a Debian base image (no registry is reachable
here). The module fixture starts that dockerd itself when it does not answer
(the last test run using it stops it again), builds the project's wheel and
its dependencies into a wheelhouse, and builds tests/docker/Dockerfile (the
Debian recipe of Dockerfile.example) FROM the base with no network, once for
the module.

The tests are skipped, with the reason, only when dockerd cannot start or the
base image cannot be built. Containers run with `--network host` and talk to
127.0.0.1 only, or with `--network none`; each test removes its containers,
and the module its image (the base image stays cached).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest

from tests.conftest import ROOT, free_port, supervisor_lines, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SCRIPT = ROOT / ".ci" / "docker.sh"
DOCKER_DIR = ROOT / "tests" / "docker"
LABEL = "entrypoint-supervisor-test"
# Long deadlines: on a loaded machine one `docker create` with the vfs driver
# copies the whole image (tens of seconds); these bound waits, they are no goals.
COMMAND_TIMEOUT = 300.0
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Docker:
    """A dockerd that answers, and the test image built in it."""

    client: str
    env: dict[str, str]
    image: str

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.client, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def logs(self, container: str) -> str:
        done = subprocess.run([self.client, "logs", container], env=self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=COMMAND_TIMEOUT)
        return done.stdout

    def state(self, container: str) -> dict[str, object]:
        out = self.run("inspect", "--format", "{{json .State}}", container).stdout
        state: dict[str, object] = json.loads(out)
        return state

    def wait(self, container: str, timeout: float) -> int:
        """The container's exit code, once it has exited (`docker wait`, bounded)."""
        try:
            out = self.run("wait", container, timeout=timeout).stdout
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the container did not exit within {timeout} s:\n"
                                 f"{self.logs(container)}") from None
        return int(out.strip())


def script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("docker.sh: ") if lines else "(no output)"


def daemon_settings() -> dict[str, str]:
    """DOCKER_HOST, DOCKER (the client), BASE_IMAGE and RUN_DIR, as .ci/docker.sh names them."""
    done = script("env", timeout=30)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@contextlib.contextmanager
def shared_daemon(run_dir: Path, client: str, env: dict[str, str]) -> Iterator[None]:
    """Use the project's dockerd, starting it if it does not answer.

    Test runs on one machine may overlap: each holds a shared lock while it uses
    the daemon, and the last one out stops it if a test run started it (a daemon
    started by hand or by CI is left running).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / "started-by-tests"
    with open(run_dir / "users", "w") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        try:
            if not answers(client, env):
                done = script("start", timeout=180)
                if done.returncode != 0:
                    pytest.skip(f"dockerd cannot start: {last_line(done.stderr)}")
                marker.touch()
            yield
        finally:
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another run still uses it
            else:
                if marker.exists():
                    script("stop", timeout=120)


def answers(client: str, env: dict[str, str]) -> bool:
    try:
        return subprocess.run([client, "info"], env=env, capture_output=True,
                              timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def build_context(directory: Path) -> None:
    """Dockerfile, the apps, and a wheelhouse: the project's wheel and uvicorn's, with deps."""
    shutil.copy(DOCKER_DIR / "Dockerfile", directory / "Dockerfile")
    apps = directory / "app"
    shutil.copytree(DOCKER_DIR / "app", apps,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "examples" / "shop.py", apps / "shop.py")
    # A copy of the source: building the wheel in the work tree would leave build/ there.
    source = directory.parent / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".hypothesis", ".*_cache", ".benchmarks", "__pycache__", "build", "dist",
        "*.egg-info"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q",
         "./", "uvicorn", "-w", str(directory / "wheels")],
        cwd=source, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout}{done.stderr}"
    shutil.rmtree(source)


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    settings = daemon_settings()
    client, base = settings["DOCKER"], settings["BASE_IMAGE"]
    if not client:
        pytest.skip("dockerd cannot start: docker.io is not installed (run .ci/docker.sh)")
    env = {**os.environ, "DOCKER_HOST": settings["DOCKER_HOST"], "DOCKER_BUILDKIT": "0"}
    with shared_daemon(Path(settings["RUN_DIR"]), client, env):
        yield from built_image(client, env, base)


def built_image(client: str, env: dict[str, str], base: str) -> Iterator[Docker]:
    work = Path(tempfile.mkdtemp(prefix="docker-test-"))
    image = f"{LABEL}:{uuid.uuid4().hex[:12]}"
    try:
        done = script("base", timeout=1200)
        if done.returncode != 0:
            pytest.skip(f"the base image cannot be built: {last_line(done.stderr)}")
        context = work / "context"
        context.mkdir()
        build_context(context)
        built = subprocess.run(
            [client, "build", "--network", "none", "--force-rm", "--quiet",
             "--build-arg", f"BASE={base}", "--label", LABEL, "-t", image, str(context)],
            env=env, capture_output=True, text=True, timeout=1200)
        assert built.returncode == 0, f"docker build failed:\n{built.stdout}{built.stderr}"
        yield Docker(client, env, image)
    finally:
        subprocess.run([client, "image", "rm", "--force", image], env=env,
                       capture_output=True, timeout=COMMAND_TIMEOUT)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def containers(docker: Docker) -> Iterator[list[str]]:
    """Ids of the containers a test started; each is removed, with its layer, at the end."""
    started: list[str] = []
    yield started
    for container in started:
        docker.run("rm", "--force", "--volumes", container, check=False)


def run(docker: Docker, containers: list[str], *options: str,
        command: Sequence[str] = ()) -> str:
    """`docker run -d` the test image (its entrypoint: the supervisor); returns the name."""
    name = f"{LABEL}-{uuid.uuid4().hex[:12]}"
    containers.append(name)
    docker.run("run", "-d", "--name", name, "--label", LABEL, *options, docker.image,
               *command)
    return name


def get(port: int, path: str) -> Optional[tuple[int, str]]:
    """(status, body) from 127.0.0.1:port, or None while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def stub_starting(port: int) -> bool:
    """The supervisor's own answer on the health path while the app starts."""
    answer = get(port, "/healthz")
    return answer is not None and answer[0] == 200 and json.loads(answer[1]) == {
        "status": "starting"}


def app_answers(port: int) -> bool:
    answer = get(port, "/hello")
    return answer is not None and answer[0] == 200 and '"app": true' in answer[1]


def uvicorn(port: int, module: str = "slowapp:app") -> list[str]:
    return ["uvicorn", module, "--host", "127.0.0.1", "--port", str(port)]


def test_healthz_answers_while_the_app_imports(docker: Docker, containers: list[str]) -> None:
    port = free_port()
    container = run(docker, containers, "--network", "host", command=uvicorn(port))
    wait_for(lambda: get(port, "/healthz"), timeout=START_TIMEOUT, interval=0.2,
             what="the supervisor to answer /healthz")
    assert stub_starting(port), get(port, "/healthz")
    # The import is still blocked: the answer was the supervisor's, and it is PID 1.
    assert docker.state(container)["Running"] is True
    cmdline = docker.run("exec", container, "cat", "/proc/1/cmdline").stdout
    assert "/opt/supervisor/bin/supervisor" in cmdline.replace("\0", " ")
    assert stub_starting(port)
    docker.run("exec", container, "touch", "/tmp/release")
    wait_for(lambda: app_answers(port), timeout=START_TIMEOUT, interval=0.2,
             what="the app to answer once its import ended")
    # docker's log driver copies the container's output a little later.
    wait_for(lambda: any("ready after" in line
                         for line in supervisor_lines(docker.logs(container).encode())),
             timeout=30, interval=0.2, what="the supervisor's ready line in docker logs")


def test_docker_stop_is_a_clean_stop_inside_its_grace(docker: Docker,
                                                       containers: list[str]) -> None:
    port = free_port()
    container = run(docker, containers, "--network", "host", "-e", "SLOWAPP_WAIT_S=0",
                    command=uvicorn(port))
    wait_for(lambda: app_answers(port), timeout=START_TIMEOUT, interval=0.2,
             what="the app to answer")
    began = time.monotonic()
    docker.run("stop", "--time", "10", container)
    took = time.monotonic() - began
    logs = docker.logs(container)
    lines = supervisor_lines(logs.encode())
    assert any("the app ended: stopped" in line for line in lines), logs
    state = docker.state(container)
    # uvicorn re-raises SIGTERM after its graceful exit: 128 + 15, and docker never killed it.
    assert state["ExitCode"] == 143 and state["OOMKilled"] is False, state
    assert took < 10, f"docker stop took {took:.1f} s: it had to kill"


def test_memory_limit_gives_oom_killed_and_exit_137(docker: Docker,
                                                    containers: list[str]) -> None:
    port = free_port()
    container = run(docker, containers, "--network", "host", "--memory", "256m",
                    "--memory-swap", "256m", "-e", "SLOWAPP_WAIT_S=0", command=uvicorn(port))
    wait_for(lambda: app_answers(port), timeout=START_TIMEOUT, interval=0.2,
             what="the app to answer")
    assert get(port, "/allocate") is None  # the connection dies with the app
    assert docker.wait(container, timeout=START_TIMEOUT) == 137
    logs = docker.logs(container)
    lines = supervisor_lines(logs.encode())
    assert any("the app ended: oom_killed" in line for line in lines), logs
    assert any("256 MiB" in line for line in lines), logs
    state = docker.state(container)
    assert state["OOMKilled"] is True and state["ExitCode"] == 137, state


def test_import_error_exits_1_with_the_block_in_docker_logs(docker: Docker,
                                                            containers: list[str]) -> None:
    # The image's own CMD (as Dockerfile.example's), on the example app failing at import.
    container = run(docker, containers, "--network", "none", "-e", "SHOP_FAIL=import")
    assert docker.wait(container, timeout=START_TIMEOUT) == 1
    logs = docker.logs(container)
    lines = supervisor_lines(logs.encode())
    assert any("the app ended: python_exception" in line for line in lines), logs
    assert any("ModuleNotFoundError: No module named 'shop_payments'" in line
               for line in lines), logs
    assert any("/app/shop.py:" in line for line in lines), logs
    assert docker.state(container)["OOMKilled"] is False

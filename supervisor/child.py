"""Starting the child and reading how it ended.

Owns: fork and exec with a clean signal state, the child's environment
defaults, fd placement for the relay and hand-off, and decoding wait status.
Must not know: what the loop does with the child afterwards.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal

from .libc import libc
from .values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional, Union

    from .libc import Libc

# Set for the child unless the user set them: no print lost in a buffer when
# the app dies, a Python stack on fatal signals, no ANSI codes in tracebacks.
CHILD_ENV_DEFAULTS = {
    "PYTHONUNBUFFERED": "1",
    "PYTHONFAULTHANDLER": "1",
    "PYTHON_COLORS": "0",
}
# What PEP 538's locale coercion sets LC_CTYPE to (Python/pylifecycle.c).
_COERCION_TARGETS = ("C.UTF-8", "C.utf8", "UTF-8")
# So high that it never collides with the targets of fd placement.
_SCRATCH_FD_FLOOR = 200
PR_SET_PDEATHSIG = 1
# The kernel picks the app, not its reporter, when memory runs out.
CHILD_OOM_SCORE_ADJ = 1000


def without_locale_coercion(environ: Mapping[str, str]) -> Mapping[str, str]:
    """``environ`` without the ``LC_CTYPE`` that our own interpreter put there.

    When the locale is C, Python's start-up (PEP 538) sets ``LC_CTYPE`` to
    ``C.UTF-8`` in its own environment, and a child would inherit it as if
    the user had set it. What the process was started with (``/proc/self/environ``,
    which ``setenv`` never changes) says whether it was there before.
    """
    value = environ.get("LC_CTYPE")
    if value not in _COERCION_TARGETS:
        return environ
    try:
        with open("/proc/self/environ", "rb") as started_with:
            original = started_with.read().split(b"\0")
    except OSError:
        return environ  # not Linux: nothing to compare with
    before = [entry[9:] for entry in original if entry.startswith(b"LC_CTYPE=")]
    if before and before[-1].decode("utf-8", "surrogateescape") == value:
        return environ  # the user's own
    env = dict(environ)
    if before:
        env["LC_CTYPE"] = before[-1].decode("utf-8", "surrogateescape")
    else:
        del env["LC_CTYPE"]
    return env


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the defaults set where the user gave no value.

    Python reads an empty ``PYTHON*`` variable as unset, so an env file's
    ``PYTHONUNBUFFERED=`` gets the default too: prints are not lost again.
    """
    env = dict(base)
    for name, value in CHILD_ENV_DEFAULTS.items():
        if not env.get(name):
            env[name] = value
    return env


@frozen
class ChildSpec:
    argv: tuple[str, ...]
    env: Mapping[str, str]
    stderr_fd: Optional[int] = None  # write end of the relay pipe; None inherits ours
    stdout_fd: Optional[int] = None
    # target fd in the child -> fd in the supervisor (socket hand-off).
    pass_fds: Optional[Mapping[int, int]] = None
    # Set LISTEN_PID to the child's own pid (systemd protocol); only the child knows it.
    set_listen_pid: bool = False
    oom_score_adj: Optional[int] = CHILD_OOM_SCORE_ADJ
    # Make the child's group the terminal's foreground group (as tini does), so
    # that it can read a tty (a breakpoint(), a prompt) instead of being stopped.
    # Only asked when the supervisor's own group has it (``holds_terminal``).
    take_terminal: bool = False
    # SIGKILL the child when the supervisor dies (PR_SET_PDEATHSIG): not as PID 1,
    # where the kernel ends the whole namespace anyway.
    die_with_parent: bool = False
    # Extra steps run in the child between fork and exec (cgroup join, namespaces).
    before_exec: tuple[Callable[[], None], ...] = ()


@frozen
class ExecFailure:
    """The command could not be started; ``status`` follows the shell: 127 or 126."""

    errno: int
    message: str

    @property
    def status(self) -> int:
        return 127 if self.errno == errno.ENOENT else 126


@frozen
class ExitStatus:
    """How a process ended: an exit code or a signal, never both."""

    code: Optional[int]
    signal: Optional[int]

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(code=None, signal=os.WTERMSIG(status))
        return cls(code=os.WEXITSTATUS(status), signal=None)

    @property
    def status(self) -> int:
        """What a shell (and the supervisor) reports: the code, or 128+N."""
        return self.code if self.code is not None else 128 + (self.signal or 0)


def holds_terminal(fd: int = 0) -> bool:
    """Whether ``fd`` is a terminal whose foreground is our process group.

    Then the child gets it (as ``docker run -it`` gives PID 1); not when we run
    in a shell's background, where taking it would steal it from the shell.
    """
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:  # ENOTTY: not a terminal; ENXIO: no controlling terminal
        return False


def enlarge_pipe(fd: int, size: int = 1 << 20) -> None:
    """A larger pipe lets a chatty child write on while the relay is busy."""
    set_pipe_size = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    try:
        fcntl.fcntl(fd, set_pipe_size, size)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size, or not Linux: the default will do


class Started:
    """A forked child that may still be on its way to exec.

    A close-on-exec pipe reports an exec failure with its errno, as
    ``subprocess`` does: EOF on it means exec succeeded. ``outcome()`` reads
    it; in between, the supervisor can do its own work (start the stub) while
    the child does its steps between fork and exec.
    """

    def __init__(self, pid: int, report_fd: int) -> None:
        self.pid = pid
        self._report_fd = report_fd

    def outcome(self) -> Union[int, ExecFailure]:
        """The pid once the child has exec'd, or why it could not (then it is reaped)."""
        chunks = []
        while True:
            chunk = os.read(self._report_fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self._report_fd)
        if not chunks:
            return self.pid
        os.waitpid(self.pid, 0)
        code_text, _, message = b"".join(chunks).decode("utf-8", "replace").partition(":")
        return ExecFailure(errno=int(code_text or 0), message=message)


def start(spec: ChildSpec) -> Union[Started, ExecFailure]:
    """Fork ``spec``'s child, which goes on to exec; ``Started.outcome()`` says how that went."""
    parent = os.getpid()
    # Resolved here, not between fork and exec: the child only calls it.
    calls = libc() if spec.die_with_parent else None
    try:
        report_read, report_write = os.pipe()
    except OSError as error:  # EMFILE, ENFILE
        return ExecFailure(errno=error.errno or 0, message=f"no pipe: {error.strerror}")
    try:
        pid = os.fork()
    except OSError as error:  # EAGAIN under a pids limit, ENOMEM
        os.close(report_read)
        os.close(report_write)
        return ExecFailure(errno=error.errno or 0, message=f"fork failed: {error.strerror}")
    if pid == 0:  # pragma: no cover - runs in the child, which execs or exits
        os.close(report_read)
        _exec_in_child(spec, report_write, parent, calls)
    os.close(report_write)
    return Started(pid, report_read)


def _exec_in_child(spec: ChildSpec, report_fd: int, parent: int,
                   calls: Optional[Libc]) -> None:  # pragma: no cover
    try:
        if calls is not None:
            calls.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)  # it died before the prctl
        os.setpgid(0, 0)
        if spec.take_terminal:
            # SIGTTOU is still ignored and blocked here (inherited): this cannot stop us.
            try:
                os.tcsetpgrp(0, os.getpgrp())
            except OSError:
                pass
        signal.set_wakeup_fd(-1)
        for signum in signal.valid_signals():
            if signum in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # the C library's reserved real-time signals
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        placements = dict(spec.pass_fds or {})
        if spec.stderr_fd is not None:
            placements[2] = spec.stderr_fd
        if spec.stdout_fd is not None:
            placements[1] = spec.stdout_fd
        # Move every source out of the way first, so that placing one fd
        # can never overwrite another's source.
        scratch = {
            target: fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, _SCRATCH_FD_FLOOR)
            for target, source in placements.items()
        }
        for target, source in scratch.items():
            os.dup2(source, target, inheritable=True)
        env = dict(spec.env)
        if spec.set_listen_pid:
            env["LISTEN_PID"] = str(os.getpid())
        if spec.oom_score_adj is not None:
            try:
                with open("/proc/self/oom_score_adj", "w") as adj:
                    adj.write(str(spec.oom_score_adj))
            except OSError:
                pass
        for step in spec.before_exec:
            step()
        os.execvpe(spec.argv[0], list(spec.argv), env)
    except BaseException as error:
        code = error.errno if isinstance(error, OSError) and error.errno else 0
        text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        try:
            os.write(report_fd, f"{code}:{text}".encode("utf-8", "replace"))
        finally:
            os._exit(127 if code == errno.ENOENT else 126)

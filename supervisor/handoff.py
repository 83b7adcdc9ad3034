"""How the listening socket reaches the child: argv rewriting and the systemd protocol.

Owns: recognising a uvicorn command, reading its address, rewriting it to take
an inherited fd, the ``{fd}`` placeholder, the systemd socket-activation
environment, and choosing a hand-off mode.

Must not know: sockets, processes or the loop. Everything here is a pure
function over argv lists and strings, so it can be tested over many shapes.

systemd's protocol wants ``LISTEN_PID`` to be the pid of the process that
reads it, which the parent cannot know before it forks. Two ways are offered:

* the loop forks itself and, in the child between fork and exec, calls
  ``resolve_listen_pid(env)`` (which replaces ``LISTEN_PID_PLACEHOLDER`` with
  ``os.getpid()``) and moves the socket to fd 3 (``SYSTEMD_FIRST_FD``);
* or the loop spawns ``systemd_command(argv, fd)``: a ``/bin/sh`` trampoline
  that sets ``LISTEN_PID=$$``, moves the socket to fd 3 and ``exec``s the
  command, which keeps the pid (so it works with plain ``subprocess.Popen``).
"""

from __future__ import annotations

import enum
import os

from .values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Mapping, Optional, Sequence

# Where systemd's protocol puts the first passed socket (SD_LISTEN_FDS_START).
SYSTEMD_FIRST_FD = 3
# Stands for the child's own pid in ``systemd_environment`` until it is known.
LISTEN_PID_PLACEHOLDER = "@LISTEN_PID@"
FD_PLACEHOLDER = "{fd}"

# uvicorn options that name where it listens; all are replaced by ``--fd N``.
_ADDRESS_OPTIONS = ("--host", "--port", "--uds", "--fd")
def _is_python(name: str) -> bool:
    """``python``, ``python3``, ``python3.11``, ``pypy3``, ``python.exe``..."""
    if name.endswith(".exe"):
        name = name[:-4]
    for base in ("python", "pypy"):
        if name.startswith(base):
            version = name[len(base) :]
            parts = version.split(".")
            return not version or all(part.isdigit() and part.isascii() for part in parts)
    return False
# Interpreter options that take a value (``-X dev``, ``-W error``).
_PYTHON_VALUE_OPTIONS = "XWQ"
# Servers that read LISTEN_FDS themselves, so ``auto`` can give them the socket.
_SYSTEMD_SERVERS = ("gunicorn", "hypercorn")


class HandoffMode(enum.Enum):
    """How the child gets the public socket (``--handoff``)."""

    FD = "fd"  # uvicorn ``--fd N``, or ``{fd}`` substituted in the command
    SYSTEMD = "systemd"  # fd 3 with LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES
    PORT = "port"  # the child binds its own address; the stub has its own port
    NONE = "none"  # the child binds its own address and there is no stub


def _program(argv: Sequence[str]) -> Optional[str]:
    """The program or module a command runs: ``uvicorn`` for ``python -m uvicorn``."""
    if not argv:
        return None
    name = os.path.basename(argv[0])
    if not _is_python(name):
        return name[:-4] if name.endswith(".exe") else name
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return None  # a script (or stdin) runs, not a module
        if arg.startswith("--"):
            index += 1  # --version and friends take no value
            continue
        # A cluster of one-letter options, e.g. "-u", "-OO", "-um", "-Xdev", "-mmod".
        for position in range(1, len(arg)):
            letter = arg[position]
            rest = arg[position + 1 :]
            if letter == "m":
                if rest:
                    return rest
                return argv[index + 1] if index + 1 < len(argv) else None
            if letter == "c":
                return None
            if letter in _PYTHON_VALUE_OPTIONS:
                if not rest:
                    index += 1  # the value is the next argument
                break
        index += 1
    return None


def is_uvicorn(argv: Sequence[str]) -> bool:
    """True for ``uvicorn ...``, ``/path/to/uvicorn ...`` and ``python -m uvicorn ...``."""
    return _program(argv) in ("uvicorn", "uvicorn.__main__")


def _option_values(argv: Sequence[str], name: str) -> list[str]:
    values: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            break
        if arg == name and index + 1 < len(argv):
            values.append(argv[index + 1])
            index += 2
            continue
        if arg.startswith(name + "="):
            values.append(arg[len(name) + 1 :])
        index += 1
    return values


def bind_address(argv: Sequence[str]) -> tuple[Optional[str], Optional[int]]:
    """The first TCP ``-b/--bind HOST:PORT`` of a gunicorn or hypercorn command.

    Both take the socket from ``LISTEN_FDS`` instead of binding it, so the
    supervisor must bind what they were told to. ``unix:``/``fd://`` binds
    name no TCP address.
    """
    values = _option_values(argv, "--bind") + _option_values(argv, "-b")
    values += [arg[2:] for arg in argv if arg.startswith("-b") and len(arg) > 2 and
               not arg.startswith("-b=")]
    for value in values:
        if value.startswith(("unix:", "fd://")):
            continue
        host, colon, port = value.rpartition(":")
        if not colon:
            host, port = value, "8000"
        if port.isdigit() and int(port) <= 65535:
            return host.strip("[]") or None, int(port)
    return None, None


def uvicorn_address(argv: Sequence[str]) -> tuple[Optional[str], Optional[int]]:
    """The ``--host`` and ``--port`` a uvicorn command names (the last one wins, as in click).

    A port that is not a number in 0..65535 is reported as None; the caller
    decides whether that is an error.
    """
    hosts = _option_values(argv, "--host")
    ports = _option_values(argv, "--port")
    host = hosts[-1] if hosts else None
    port: Optional[int] = None
    if ports and ports[-1].isdigit() and int(ports[-1]) <= 65535:
        port = int(ports[-1])
    return host, port


def rewrite_for_fd(argv: Sequence[str], fd: int) -> list[str]:
    """Replace uvicorn's ``--host/--port/--uds/--fd`` (and values) with ``--fd N``.

    Every other option (``--workers``, ``--proxy-headers``...) is kept in place.
    ``--fd N`` goes before a ``--`` if there is one, else at the end.
    """
    out: list[str] = []
    index = 0
    end_of_options = len(argv)
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            end_of_options = len(out)
            out.extend(argv[index:])
            break
        if arg in _ADDRESS_OPTIONS:
            index += 2
            continue
        if any(arg.startswith(option + "=") for option in _ADDRESS_OPTIONS):
            index += 1
            continue
        out.append(arg)
        index += 1
    else:
        end_of_options = len(out)
    return [*out[:end_of_options], "--fd", str(fd), *out[end_of_options:]]


def substitute_placeholder(argv: Sequence[str], fd: int) -> tuple[list[str], bool]:
    """Replace ``{fd}`` anywhere in any argument; say whether there was one."""
    found = any(FD_PLACEHOLDER in arg for arg in argv)
    return [arg.replace(FD_PLACEHOLDER, str(fd)) for arg in argv], found


def systemd_environment(fd_count: int = 1, names: Sequence[str] = ("http",)) -> dict[str, str]:
    """The socket-activation variables for ``fd_count`` sockets from fd 3 on.

    ``LISTEN_PID`` is ``LISTEN_PID_PLACEHOLDER``: it must become the child's own
    pid (see the module docstring). Servers ignore the variables when it does
    not match their pid, which is how they tell the sockets are meant for them.
    """
    if fd_count < 1:
        raise ValueError("fd_count must be at least 1")
    if len(names) != fd_count:
        raise ValueError("one name per socket is needed")
    if any(":" in name for name in names):
        raise ValueError("a socket name cannot contain ':'")
    return {
        "LISTEN_FDS": str(fd_count),
        "LISTEN_PID": LISTEN_PID_PLACEHOLDER,
        "LISTEN_FDNAMES": ":".join(names),
    }


def resolve_listen_pid(env: Mapping[str, str], pid: Optional[int] = None) -> dict[str, str]:
    """``env`` with the LISTEN_PID placeholder replaced by ``pid`` (default: this process).

    Meant to run in the child between fork and exec, where ``os.getpid()`` is
    the pid the exec'd server will have.
    """
    resolved = dict(env)
    if resolved.get("LISTEN_PID") == LISTEN_PID_PLACEHOLDER:
        resolved["LISTEN_PID"] = str(os.getpid() if pid is None else pid)
    return resolved


def systemd_command(argv: Sequence[str], fd: int, shell: str = "/bin/sh") -> list[str]:
    """A command that runs ``argv`` with the socket on fd 3 and LISTEN_PID set to its pid.

    ``exec`` keeps the shell's pid, so ``$$`` is the server's pid. POSIX shells
    only accept single-digit fds in redirections, hence the limit on ``fd``;
    the environment should come from ``systemd_environment`` (its LISTEN_PID
    placeholder is overwritten here).
    """
    if not 0 <= fd <= 9:
        raise ValueError(f"the shell trampoline needs the socket on fd 0..9, not {fd}")
    move = "" if fd == SYSTEMD_FIRST_FD else f" {SYSTEMD_FIRST_FD}<&{fd} {fd}<&-"
    script = f'LISTEN_PID=$$; export LISTEN_PID; exec "$@"{move}'
    return [shell, "-c", script, "sh", *argv]


def choose_mode(requested: str, argv: Sequence[str]) -> HandoffMode:
    """Resolve ``--handoff`` (``auto|fd|systemd|port``) for a command.

    ``auto``: uvicorn or a ``{fd}`` placeholder gets the fd, gunicorn and
    hypercorn (which read LISTEN_FDS) get systemd's protocol, anything else
    binds its own address (NONE). Raises ValueError for an unknown mode or
    ``fd`` with a command that cannot take one.
    """
    placeholder = any(FD_PLACEHOLDER in arg for arg in argv)
    if requested == "auto":
        if is_uvicorn(argv) or placeholder:
            return HandoffMode.FD
        if _program(argv) in _SYSTEMD_SERVERS:
            return HandoffMode.SYSTEMD
        return HandoffMode.NONE
    if requested == "fd":
        if not (is_uvicorn(argv) or placeholder):
            raise ValueError(
                "--handoff fd needs a uvicorn command or a {fd} placeholder in the command"
            )
        return HandoffMode.FD
    if requested == "systemd":
        return HandoffMode.SYSTEMD
    if requested == "port":
        return HandoffMode.PORT
    raise ValueError(f"--handoff must be one of auto, fd, systemd, port; not {requested!r}")


# -- the plan the loop follows ---------------------------------------------------

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8000


@frozen
class HandoffPlan:
    """What the loop binds, what the child runs, and how readiness is told."""

    mode: HandoffMode
    argv: tuple[str, ...]
    env: Mapping[str, str]  # added to the child's environment
    stub_address: Optional[tuple[str, int]]  # where the stub listens (None: no stub)
    app_port: Optional[int]  # where the app listens in port mode

    @property
    def passes_socket(self) -> bool:
        return self.mode in (HandoffMode.FD, HandoffMode.SYSTEMD)


def plan_handoff(
    requested: str,
    argv: Sequence[str],
    host: Optional[str],
    port: Optional[int],
    health_port: Optional[int],
    environ: Mapping[str, str],
) -> HandoffPlan:
    """Decide the hand-off from the options and the command; ValueError names the problem.

    The public address is ``--host/--port``, else the uvicorn command's own,
    else ``$PORT`` (as Cloud Run and Heroku set it), else 0.0.0.0:8000.
    """
    if is_uvicorn(argv):
        command_host, command_port = uvicorn_address(argv)
    elif _program(argv) in _SYSTEMD_SERVERS:
        command_host, command_port = bind_address(argv)
    else:
        command_host, command_port = None, None
    public_host = host or command_host or DEFAULT_HOST
    public_port = port or command_port or _port_from_env(environ) or DEFAULT_PORT
    if requested == "none":
        return HandoffPlan(HandoffMode.NONE, tuple(argv), {}, None, None)
    mode = choose_mode(requested, argv)
    if mode is HandoffMode.NONE and health_port is not None:
        mode = HandoffMode.PORT
    if mode is HandoffMode.PORT:
        if health_port is None:
            raise ValueError("--handoff port needs --health-port for the stub")
        if health_port == public_port:
            raise ValueError(f"--health-port {health_port} is the app's own port")
        return HandoffPlan(mode, tuple(argv), {}, (public_host, health_port), public_port)
    if mode is HandoffMode.NONE:
        return HandoffPlan(mode, tuple(argv), {}, None, None)
    if mode is HandoffMode.SYSTEMD:
        return HandoffPlan(
            mode, tuple(argv), systemd_environment(), (public_host, public_port), None
        )
    child_argv, had_placeholder = substitute_placeholder(argv, SYSTEMD_FIRST_FD)
    if not had_placeholder:
        child_argv = rewrite_for_fd(argv, SYSTEMD_FIRST_FD)
    return HandoffPlan(mode, tuple(child_argv), {}, (public_host, public_port), None)


def _port_from_env(environ: Mapping[str, str]) -> Optional[int]:
    text = environ.get("PORT", "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"PORT: invalid value {text!r}: expected a port number from 1 to 65535")
    return int(text)

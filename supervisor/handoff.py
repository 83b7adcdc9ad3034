"""How the listening socket reaches the child: the plan, and systemd's protocol.

Owns: choosing a hand-off mode for a command, the public address (TCP or a
unix socket), the ``{fd}`` placeholder, the systemd socket-activation
environment, and the lines said at start about what is served where (an
address that was asked for and is not served is never silent). What each
server reads is in ``servers``.

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

from .servers import FD_OPTION, SYSTEMD, UVICORN, Server, identify
from .values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Mapping, Optional, Sequence

# Where systemd's protocol puts the first passed socket (SD_LISTEN_FDS_START).
SYSTEMD_FIRST_FD = 3
# Stands for the child's own pid in ``systemd_environment`` until it is known.
LISTEN_PID_PLACEHOLDER = "@LISTEN_PID@"
FD_PLACEHOLDER = "{fd}"

# Servers that read LISTEN_FDS themselves; a ``--handoff systemd`` may name any other.
_SYSTEMD_SERVERS = ("gunicorn",)


class HandoffMode(enum.Enum):
    """How the child gets the public socket."""

    FD = "fd"  # a server's own fd option (uvicorn, hypercorn, daphne), or ``{fd}``
    SYSTEMD = "systemd"  # fd 3 with LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES
    BIND = "bind"  # the child binds its own address; its bind(2) gets the socket
    PORT = "port"  # the child binds its own address; the stub has its own port
    NONE = "none"  # the child binds its own address and there is no stub


def is_uvicorn(argv: Sequence[str]) -> bool:
    """True for ``uvicorn ...``, ``/path/to/uvicorn ...`` and ``python -m uvicorn ...``."""
    return identify(argv) is UVICORN


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
    """Resolve ``--handoff`` (``auto|fd|systemd|port|none``) for a command.

    ``auto``: a ``{fd}`` placeholder or a server with an fd option gets the fd,
    gunicorn gets systemd's protocol, anything else has its bind(2) answered
    (BIND). Raises ValueError for an unknown mode or ``fd`` with a command
    that cannot take one.
    """
    placeholder = any(FD_PLACEHOLDER in arg for arg in argv)
    way = identify(argv).way_for(argv)
    if requested == "auto":
        if placeholder or way == FD_OPTION:
            return HandoffMode.FD
        if way == SYSTEMD:
            return HandoffMode.SYSTEMD
        return HandoffMode.BIND
    if requested == "fd":
        if not (placeholder or way == FD_OPTION):
            raise ValueError(
                "--handoff fd needs a server with an fd option (uvicorn, hypercorn, daphne) "
                "or a {fd} placeholder in the command"
            )
        return HandoffMode.FD
    for mode in (HandoffMode.SYSTEMD, HandoffMode.PORT, HandoffMode.NONE):
        if requested == mode.value:
            return mode
    raise ValueError(
        f"--handoff must be one of auto, fd, systemd, port, none; not {requested!r}"
    )


# -- the plan the loop follows ---------------------------------------------------

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8000
INFO = "info"
WARNING = "warning"


@frozen
class HandoffPlan:
    """What the loop binds, what the child runs, what it says at start."""

    mode: HandoffMode
    argv: tuple[str, ...]
    env: Mapping[str, str]  # added to the child's environment
    stub_address: Optional[tuple[str, int]]  # where the stub listens on TCP (None: not TCP)
    app_port: Optional[int]  # where the app listens in port mode
    unix_path: Optional[str] = None  # the stub listens on this unix socket instead
    # BIND: the child's bind(2) of this port gets the public socket.
    bind_port: Optional[int] = None
    # (level, line) for the log at start: what is served where, and what is not.
    notices: tuple[tuple[str, str], ...] = ()
    # The command restarts the app on changes: a crash while starting is not the end.
    reloads: bool = False
    # False for a command not known to be a server: it is one once it binds the port.
    known_server: bool = True

    @property
    def passes_socket(self) -> bool:
        return self.mode in (HandoffMode.FD, HandoffMode.SYSTEMD)

    @property
    def has_stub(self) -> bool:
        return self.stub_address is not None or self.unix_path is not None


def plan_handoff(
    requested: str,
    argv: Sequence[str],
    host: Optional[str],
    port: Optional[int],
    health_port: Optional[int],
    environ: Mapping[str, str],
    bind_unavailable: Optional[str] = None,
) -> HandoffPlan:
    """Decide the hand-off from the options and the command; ValueError names the problem.

    The public address is ``--host/--port``, else the command's own (a unix
    socket too), else ``$PORT`` (as Cloud Run and Heroku set it), else
    0.0.0.0:8000. ``bind_unavailable`` says why the child's bind(2) cannot be
    answered here (None when it can); such a command then runs without a stub,
    and says so. A command not known to be a server gets the stub only when a
    port is named (by a flag, ``$PORT`` or its own ``--port``): otherwise it is
    a plain process, as under tini.
    """
    server = identify(argv)
    env_port = _port_from_env(environ)
    named = server.address(argv, environ)
    command_path = named if isinstance(named, str) else None
    command_host, command_port = (None, None) if isinstance(named, str) else named
    replaced_path = None
    if (port is not None or host is not None) and command_path is not None:
        replaced_path, command_path = command_path, None  # the supervisor's flags win
    public_host = host or command_host or DEFAULT_HOST
    public_port = port or command_port or env_port or DEFAULT_PORT
    reloads = server.reloads is not None and server.reloads(argv)
    notes = _Notes(argv, server, port, env_port)
    if requested == "none":
        notes.not_served("with --handoff none the supervisor binds no address")
        return HandoffPlan(HandoffMode.NONE, tuple(argv), {}, None, None,
                           notices=notes.lines, reloads=reloads)
    mode = choose_mode(requested, argv)
    if mode is HandoffMode.BIND and health_port is not None:
        mode = HandoffMode.PORT
    env = dict(server.env or {})
    if mode is HandoffMode.PORT:
        if health_port is None:
            raise ValueError("--handoff port needs --health-port for the stub")
        if health_port == public_port:
            raise ValueError(f"--health-port {health_port} is the app's own port")
        return HandoffPlan(mode, tuple(argv), env, (public_host, health_port), public_port,
                           reloads=reloads)
    port_named = any(value is not None for value in (port, host, command_port, env_port))
    if mode is HandoffMode.BIND and not server.name and not port_named:
        # Not known to be a server, and no port named: a plain process, as with tini.
        return HandoffPlan(HandoffMode.NONE, tuple(argv), env, None, None, reloads=reloads)
    if mode is HandoffMode.BIND and command_path is not None:
        bind_unavailable = f"its bind() of a unix socket ({command_path}) is left to it"
    if mode is HandoffMode.BIND and bind_unavailable is not None:
        notes.no_socket(bind_unavailable)
        return HandoffPlan(HandoffMode.NONE, tuple(argv), env, None, None,
                           notices=notes.lines, reloads=reloads)
    served = command_path or public_port
    notes.served_elsewhere(served, command_port if command_path is None else None, replaced_path)
    stub_address = None if command_path else (public_host, public_port)
    if mode is HandoffMode.BIND:
        bind_port = command_port or server.default_port or public_port
        notes.binds_itself(bind_port, served)
        return HandoffPlan(mode, tuple(argv), env, stub_address, None, None, bind_port,
                           notes.lines, reloads, known_server=bool(server.name))
    if mode is HandoffMode.SYSTEMD:
        env.update(systemd_environment())
        return HandoffPlan(mode, tuple(argv), env, stub_address, None, command_path,
                           notices=notes.lines, reloads=reloads)
    child_argv, had_placeholder = substitute_placeholder(argv, SYSTEMD_FIRST_FD)
    if not had_placeholder and server.rewrite is not None:
        child_argv = server.rewrite(argv, SYSTEMD_FIRST_FD)
    return HandoffPlan(mode, tuple(child_argv), env, stub_address, None, command_path,
                       notices=notes.lines, reloads=reloads)


class _Notes:
    """The lines said at start: an address asked for and not served is never silent."""

    def __init__(self, argv: Sequence[str], server: Server, port: Optional[int],
                 env_port: Optional[int]) -> None:
        # Its name and first words, never its options (a --token=... must not be echoed).
        words = [os.path.basename(argv[0]), *(a for a in argv[1:3] if not a.startswith("-"))]
        self.what = f"`{server.name}`" if server.name else f"`{' '.join(words)}`"
        self.server = server
        self.port = port
        self.env_port = env_port
        self.lines: tuple[tuple[str, str], ...] = ()

    def _add(self, level: str, line: str) -> None:
        self.lines += ((level, line),)

    def _unserved(self) -> str:
        asked = []
        if self.port is not None:
            asked.append(f"--port {self.port}")
        if self.env_port is not None and self.env_port != self.port:
            asked.append(f"PORT={self.env_port}")
        return f"nothing answers on {' or '.join(asked)} until the app binds it" if asked else ""

    def not_served(self, why: str) -> None:
        unserved = self._unserved()
        if unserved:
            self._add(WARNING, f"{why}: {unserved}")

    def no_socket(self, why: str) -> None:
        unserved = self._unserved()
        self._add(WARNING, (
            f"no stub and no hand-off for {self.what}: it binds its own address and the "
            f"supervisor cannot answer that bind here ({why}); readiness is not tracked"
            f"{', and ' + unserved if unserved else ''}. For the stub, {self.server.hint}"
        ))

    def served_elsewhere(self, served: object, command_port: Optional[int],
                         replaced_path: Optional[str] = None) -> None:
        where = f"the unix socket {served}" if isinstance(served, str) else f"port {served}"
        if replaced_path is not None:
            self._add(INFO, f"the command's unix socket {replaced_path} is served on {where} "
                            "(--host/--port)")
        if self.port is not None and command_port not in (None, self.port):
            self._add(INFO, f"the command's port {command_port} is served on port "
                            f"{self.port} (--port)")
        if self.env_port is not None and self.env_port != served:
            named = "--port names it" if self.port is not None else "the command names it"
            self._add(WARNING, (
                f"PORT={self.env_port} is set, but the app is served on {where} ({named}): "
                f"traffic sent to $PORT finds nothing; drop the address from the command, "
                f"or start the supervisor with --port {self.env_port}"
            ))

    def binds_itself(self, bound: object, public: object) -> None:
        if bound != public:
            self._add(INFO, f"{self.what} binds port {bound}: that bind() gets the socket of "
                            f"port {public}")


def _port_from_env(environ: Mapping[str, str]) -> Optional[int]:
    text = environ.get("PORT", "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"PORT: invalid value {text!r}: expected a port number from 1 to 65535")
    return int(text)

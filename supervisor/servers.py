"""The web servers the supervisor knows: how each names its address and takes a socket.

Owns: the table of known servers (uvicorn, gunicorn, hypercorn, daphne,
granian, fastapi-cli, flask, Django's runserver), reading the address a
command names, and rewriting a command so that the server takes an
inherited socket instead of binding one. Each entry follows the server's
own source, not its documentation:

* uvicorn ``--fd N`` (its ``--host/--port/--uds`` are dropped);
* hypercorn ``-b fd://N`` (0.18 does not read ``LISTEN_FDS``);
* daphne ``--fd N`` (a twisted ``fd:fileno=N`` endpoint);
* gunicorn reads systemd's ``LISTEN_FDS`` (with ``LISTEN_PID``) and then
  ignores its ``-b`` addresses;
* granian, fastapi-cli (``fastapi run/dev`` call ``uvicorn.run``), flask and
  Django's runserver have no way to take a socket: they bind their own, and
  the supervisor answers that ``bind(2)`` (see ``bindtrap``).

Must not know: sockets, processes or the loop: pure functions over argv
lists. It is on the path from exec to spawning the child, so it imports
nothing that ``handoff`` does not.
"""

from __future__ import annotations

import os

from .values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional, Sequence, Union

    # A TCP (host, port) with either part unnamed, or the path of a unix socket.
    Address = Union[tuple[Optional[str], Optional[int]], str]


# How a server takes the supervisor's socket.
FD_OPTION = "fd_option"  # an option of its own names an inherited fd
SYSTEMD = "systemd"  # LISTEN_FDS/LISTEN_PID with the socket on fd 3
BINDS_ITSELF = "binds_itself"  # no way: it binds its own address

# Interpreter options that take a value (``-X dev``, ``-W error``).
_PYTHON_VALUE_OPTIONS = "XWQ"


@frozen
class Server:
    """One known server, as its own source reads its command line."""

    name: str
    way: str  # FD_OPTION, SYSTEMD or BINDS_ITSELF
    # The address the command names: (host, port) or a unix path; parts it
    # does not name are None. Reads the environment where the server does.
    address: Callable[[Sequence[str], Mapping[str, str]], Address]
    # Where the server binds when the command names nothing (for bind interception).
    default_port: Optional[int] = None
    # The command rewritten to take fd N (FD_OPTION servers only).
    rewrite: Optional[Callable[[Sequence[str], int], list[str]]] = None
    # Added to the child's environment.
    env: Optional[Mapping[str, str]] = None
    # How to give it the stub where the supervisor cannot intercept its bind.
    hint: str = ""
    # The command restarts the app on changes, so a crash while starting is not the end.
    reloads: Optional[Callable[[Sequence[str]], bool]] = None
    # With these options it ignores the socket it is given and binds its own.
    binds_itself_with: tuple[str, ...] = ()

    def way_for(self, argv: Sequence[str]) -> str:
        return BINDS_ITSELF if has_flag(argv, *self.binds_itself_with) else self.way


# -- reading options ------------------------------------------------------------------


def option_values(argv: Sequence[str], *names: str, attached: str = "") -> list[str]:
    """Every value given to one of ``names`` (``--port 80``, ``--port=80``), in order.

    ``attached`` is a short option that may carry its value glued on (``-p80``,
    ``-b0.0.0.0:80``). Scanning stops at ``--``.
    """
    values: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            break
        if arg in names:
            if index + 1 < len(argv):
                values.append(argv[index + 1])
            index += 2
            continue
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                values.append(arg[len(name) + 1 :])
        if attached and arg.startswith(attached) and len(arg) > len(attached):
            value = arg[len(attached) :]
            values.append(value[1:] if value.startswith("=") else value)
        index += 1
    return values


def has_flag(argv: Sequence[str], *names: str) -> bool:
    for arg in argv:
        if arg == "--":
            return False
        if arg in names:
            return True
    return False


def remove_options(argv: Sequence[str], names: Sequence[str], attached: Sequence[str] = ()
                   ) -> tuple[list[str], int]:
    """``argv`` without ``names`` and their values; also where options end (before ``--``)."""
    out: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            end = len(out)
            out.extend(argv[index:])
            return out, end
        if arg in names:
            index += 2
            continue
        if any(arg.startswith(name + "=") for name in names if name.startswith("--")):
            index += 1
            continue
        if any(arg.startswith(short) and len(arg) > len(short) for short in attached):
            index += 1
            continue
        out.append(arg)
        index += 1
    return out, len(out)


def _port(text: Optional[str]) -> Optional[int]:
    """A port number in 0..65535, or None for anything else."""
    if text is None:
        return None
    text = text.strip()
    if not (text.isdigit() and text.isascii()) or len(text) > 5 or int(text) > 65535:
        return None
    return int(text)


def split_host_port(value: str, default_port: Optional[int]) -> tuple[Optional[str], Optional[int]]:
    """``HOST:PORT``, ``[::1]:PORT``, ``HOST`` or ``:PORT``; None for a part that is absent."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host or None, _port(rest[1:]) if rest.startswith(":") else default_port
    host, colon, port = value.rpartition(":")
    if not colon:
        return value or None, default_port
    if ":" in host:  # a bare IPv6 address: no port
        return value, default_port
    return host or None, _port(port)


def _last(values: Sequence[str]) -> Optional[str]:
    return values[-1] if values else None


# -- uvicorn ----------------------------------------------------------------------------

# uvicorn options that name where it listens; all give way to ``--fd N``.
_UVICORN_ADDRESS = ("--host", "--port", "--uds", "--fd")


def _uvicorn_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    uds = _last(option_values(argv, "--uds"))
    if uds:
        return uds
    return _last(option_values(argv, "--host")), _port(_last(option_values(argv, "--port")))


def _uvicorn_rewrite(argv: Sequence[str], fd: int) -> list[str]:
    """``--host/--port/--uds/--fd`` (and values) out, ``--fd N`` in, before any ``--``."""
    out, end = remove_options(argv, _UVICORN_ADDRESS)
    return [*out[:end], "--fd", str(fd), *out[end:]]


def _reload_flag(argv: Sequence[str]) -> bool:
    return has_flag(argv, "--reload")


# -- gunicorn and hypercorn: -b/--bind, repeated ---------------------------------------------


def bind_values(argv: Sequence[str]) -> list[str]:
    return option_values(argv, "-b", "--bind", attached="-b")


def _first_bind(binds: Sequence[str], default: Address) -> Address:
    """The first TCP bind, else the first unix path (``fd://`` names no address)."""
    paths = [value[len("unix:") :] for value in binds if value.startswith("unix:")]
    for value in binds:
        if value.startswith(("unix:", "fd://")):
            continue
        host, port = split_host_port(value, 8000)
        if port is not None:
            return host, port
    return paths[0] if paths else default


def _gunicorn_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    binds = bind_values(argv) + bind_values(environ.get("GUNICORN_CMD_ARGS", "").split())
    # gunicorn's own default: 0.0.0.0:$PORT when PORT is set, else 127.0.0.1:8000.
    port = _port(environ.get("PORT"))
    default: Address = ("0.0.0.0", port) if port is not None else (None, None)
    return _first_bind(binds, default)


def _hypercorn_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    return _first_bind(bind_values(argv), (None, None))


def _hypercorn_rewrite(argv: Sequence[str], fd: int) -> list[str]:
    """Every bind of the command's own address becomes one ``-b fd://N``.

    Binds of other ports (and ``fd://`` binds the user gave) are kept: hypercorn
    serves all of them.
    """
    wanted = _first_bind(bind_values(argv), (None, None))
    out: list[str] = []
    index = 0
    end = len(argv)
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            end = len(out)
            out.extend(argv[index:])
            break
        value: Optional[str] = None
        width = 1
        if arg in ("-b", "--bind") and index + 1 < len(argv):
            value, width = argv[index + 1], 2
        elif arg.startswith("--bind="):
            value = arg[len("--bind=") :]
        elif arg.startswith("-b") and len(arg) > 2:
            value = arg[2:].lstrip("=")
        if value is not None and _is_address(value, wanted):
            index += width
            continue
        out.append(arg)
        index += 1
    else:
        end = len(out)
    return [*out[:end], "-b", f"fd://{fd}", *out[end:]]


def _is_address(bind: str, wanted: Address) -> bool:
    if bind.startswith("unix:"):
        return isinstance(wanted, str) and bind[len("unix:") :] == wanted
    if bind.startswith("fd://") or isinstance(wanted, str):
        return False
    return split_host_port(bind, 8000)[1] == wanted[1]


# -- daphne -------------------------------------------------------------------------------

_DAPHNE_ADDRESS = ("-b", "--bind", "-p", "--port", "-u", "--unix-socket", "--fd")


def _daphne_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    unix = _last(option_values(argv, "-u", "--unix-socket", attached="-u"))
    if unix:
        return unix
    host = _last(option_values(argv, "-b", "--bind", attached="-b"))
    return host, _port(_last(option_values(argv, "-p", "--port", attached="-p")))


def _daphne_rewrite(argv: Sequence[str], fd: int) -> list[str]:
    """Its address options out, ``--fd N`` in (argparse takes options anywhere)."""
    out, end = remove_options(argv, _DAPHNE_ADDRESS, attached=("-b", "-p", "-u"))
    return [*out[:end], "--fd", str(fd), *out[end:]]


# -- servers that bind their own address -----------------------------------------------------


def _granian_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    uds = _last(option_values(argv, "--uds")) or environ.get("GRANIAN_UDS")
    if uds:
        return uds
    host = _last(option_values(argv, "--host")) or environ.get("GRANIAN_HOST")
    port = _last(option_values(argv, "--port")) or environ.get("GRANIAN_PORT")
    return host, _port(port)


def _fastapi_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    port = _last(option_values(argv, "--port")) or environ.get("PORT")
    return _last(option_values(argv, "--host")), _port(port)


def _flask_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    host = _last(option_values(argv, "-h", "--host")) or environ.get("FLASK_RUN_HOST")
    port = _last(option_values(argv, "-p", "--port")) or environ.get("FLASK_RUN_PORT")
    return host, _port(port)


def _runserver_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    """``manage.py runserver [ADDR:]PORT``: the first positional after ``runserver``."""
    rest = list(argv[argv.index("runserver") + 1 :]) if "runserver" in argv else []
    for arg in rest:
        if not arg.startswith("-"):
            return split_host_port(arg, None) if not arg.isdigit() else (None, _port(arg))
    return None, None


def generic_address(argv: Sequence[str], environ: Mapping[str, str]) -> Address:
    """An unknown command's ``--host``/``--port``, if it has them."""
    return _last(option_values(argv, "--host")), _port(_last(option_values(argv, "--port")))


def _fastapi_reloads(argv: Sequence[str]) -> bool:
    return "dev" in argv or has_flag(argv, "--reload")


def _flask_reloads(argv: Sequence[str]) -> bool:
    return has_flag(argv, "--reload", "--debug")


def _runserver_reloads(argv: Sequence[str]) -> bool:
    return "runserver" in argv and not has_flag(argv, "--noreload")


# fastapi-cli draws tracebacks as a rich box unless typer is told otherwise.
_TYPER_PLAIN = {"_TYPER_STANDARD_TRACEBACK": "1"}
_PORT_MODE_HINT = "--handoff port --health-port N (the stub on a port of its own)"

UVICORN = Server("uvicorn", FD_OPTION, _uvicorn_address, rewrite=_uvicorn_rewrite,
                 reloads=_reload_flag)
# --reuse-port: every worker binds a socket of its own (the arbiter skips LISTEN_FDS).
GUNICORN = Server("gunicorn", SYSTEMD, _gunicorn_address, reloads=_reload_flag,
                  binds_itself_with=("--reuse-port",), default_port=8000)
HYPERCORN = Server("hypercorn", FD_OPTION, _hypercorn_address, rewrite=_hypercorn_rewrite,
                   reloads=_reload_flag)
DAPHNE = Server("daphne", FD_OPTION, _daphne_address, rewrite=_daphne_rewrite)
GRANIAN = Server(
    "granian", BINDS_ITSELF, _granian_address, default_port=8000, reloads=_reload_flag,
    hint=f"granian takes no socket: {_PORT_MODE_HINT}",
)
FASTAPI = Server(
    "fastapi", BINDS_ITSELF, _fastapi_address, default_port=8000, env=_TYPER_PLAIN,
    reloads=_fastapi_reloads,
    hint="run `uvicorn main:app` instead (it takes the socket), or " + _PORT_MODE_HINT,
)
FLASK = Server("flask", BINDS_ITSELF, _flask_address, default_port=5000,
               reloads=_flask_reloads, hint=_PORT_MODE_HINT)
RUNSERVER = Server("manage.py runserver", BINDS_ITSELF, _runserver_address, default_port=8000,
                   reloads=_runserver_reloads, hint=_PORT_MODE_HINT)
UNKNOWN = Server(
    "", BINDS_ITSELF, generic_address, reloads=_reload_flag,
    hint="put {fd} in the command where it takes an inherited fd (e.g. `python main.py "
    "{fd}` with `uvicorn.run(app, fd=int(sys.argv[1]))`), or " + _PORT_MODE_HINT,
)

# Program or module name -> server. A module run with ``python -m`` counts as its program.
_BY_PROGRAM = {
    "uvicorn": UVICORN, "uvicorn.__main__": UVICORN,
    "gunicorn": GUNICORN, "gunicorn.__main__": GUNICORN,
    "hypercorn": HYPERCORN, "hypercorn.__main__": HYPERCORN,
    "daphne": DAPHNE, "daphne.__main__": DAPHNE,
    "granian": GRANIAN, "granian.__main__": GRANIAN,
    "fastapi": FASTAPI, "fastapi_cli": FASTAPI, "fastapi.__main__": FASTAPI,
    "flask": FLASK, "flask.__main__": FLASK,
    "manage.py": RUNSERVER,
}


def identify(argv: Sequence[str]) -> Server:
    """The known server a command runs, or ``UNKNOWN``."""
    program = program_of(argv)
    server = _BY_PROGRAM.get(program or "")
    if server is RUNSERVER and "runserver" not in argv:
        return UNKNOWN
    return server or UNKNOWN


def program_of(argv: Sequence[str]) -> Optional[str]:
    """The program, ``python -m`` module, or script base name a command runs."""
    if not argv:
        return None
    name = os.path.basename(argv[0])
    if not _is_python(name):
        return name[:-4] if name.endswith(".exe") else name
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--" or arg == "-":
            return None
        if not arg.startswith("-"):
            return os.path.basename(arg)  # a script: manage.py, main.py
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

"""Everything before the loop: the child's environment, the public socket, the spawn.

Owns: the reproduced conditions that must be in place before exec (the env
file and a clean environment, the network namespace, the cgroup), binding the
public socket as the hand-off plan says, the spawn with its pipes, the bind
filter for a command that binds its own address (and the spawn without it
where the kernel refuses), and the import profile's variable.
Must not know: what happens once the child runs (the loop's job).

It runs before the spawn, so it stays cheap to import: no typing, re or
dataclasses at run time.
"""

from __future__ import annotations

import os

from .child import (
    ChildSpec,
    ExecFailure,
    Started,
    child_environment,
    enlarge_pipe,
    start,
    without_locale_coercion,
)
from .errors import SupervisorError
from .handoff import SYSTEMD_FIRST_FD, HandoffMode, plan_handoff
from .listener import bind_public, plan_address_text

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    import socket
    from typing import Callable, Mapping, Optional, Union

    from .child_cgroup import ChildCgroup
    from .config import Config
    from .forensics import Forensics
    from .handoff import HandoffPlan
    from .log import Logger
    from .reactor import Reactor


class Launch:
    """Prepares and starts the child; the loop takes over what it leaves in its fields."""

    def __init__(
        self, config: Config, environ: Mapping[str, str], log: Logger, plan: HandoffPlan,
        reactor: Reactor, started_mono: float, interactive: bool,
        arm: Callable[[int], None],
    ) -> None:
        self.config = config
        self.environ = environ
        self.log = log
        self.plan = plan
        self.reactor = reactor
        self.started_mono = started_mono
        self.interactive = interactive
        self._arm = arm  # called with the pid as soon as the child exists
        self.child_env: dict[str, str] = {}
        self.env_file_values: Optional[dict[str, str]] = None
        self.cgroup: Optional[ChildCgroup] = None
        self.listener: Optional[socket.socket] = None
        self.pipes: tuple[Optional[int], Optional[int]] = (None, None)
        self.forensics: Optional[Forensics] = None
        self.bind_notify_fd: Optional[int] = None  # the bind filter's, when installed
        self._child: Optional[Union[Started, int, ExecFailure]] = None

    def prepare(self) -> tuple[Callable[[], None], ...]:
        """The platform's conditions: checked and set up before anything starts."""
        config = self.config
        base: Mapping[str, str] = without_locale_coercion(self.environ)
        if config.env_file is not None or config.clean_env:
            from .envfile import parse_env_file, reproduce_environment

            values = parse_env_file(config.env_file) if config.env_file else {}
            self.env_file_values = values
            base = reproduce_environment(self.environ, values, config.clean_env)
        self.child_env = child_environment(base)
        steps: list[Callable[[], None]] = []
        if config.no_network:
            from .netns import check_can_unshare_network, enter_new_network_namespace

            check_can_unshare_network()
            steps.append(enter_new_network_namespace)
        if config.memory_limit is not None or config.cpu_limit is not None:
            from .child_cgroup import ChildCgroup

            self.cgroup = ChildCgroup.create(config.memory_limit, config.cpu_limit)
            steps.append(self.cgroup.join_in_child)
        return tuple(steps)

    def _argv_for_child(self) -> tuple[str, ...]:
        """The command found on the caller's PATH when an env file brings a PATH of its own.

        A platform runs the image's command as the image resolves it; the env
        file's PATH is for what the app itself starts.
        """
        argv = self.plan.argv
        if not self.env_file_values or "PATH" not in self.env_file_values:
            return argv
        from .importprofile import resolve_command

        found = resolve_command(argv[0], self.environ.get("PATH"))
        return (found, *argv[1:]) if found else argv

    def _say_the_plan(self) -> None:
        """An address asked for and not served, or a command without the stub: never silent."""
        for level, line in self.plan.notices:
            (self.log.warning if level == "warning" else self.log.info)(line)

    def bind(self) -> None:
        """Bind before the child starts: the port answers from the first moment."""
        try:
            self.listener = bind_public(self.plan)
        except OSError as error:
            why = f"cannot listen on {plan_address_text(self.plan)}: {error.strerror or error}"
            if self.plan.mode is not HandoffMode.BIND:
                raise SupervisorError(why) from None
            # It binds its own address: it may as well try, and say what it gets.
            self._replan(why)

    def spawn(self, before_exec: tuple[Callable[[], None], ...]) -> None:
        """Fork the child on its way to exec; ``exec_outcome()`` then says how that went.

        The supervisor starts its stub meanwhile. A child that binds its own
        address has that bind answered (``bindtrap``): its outcome is read at
        once, since where the kernel refuses the filter the child is started
        again without it, and without the stub (the app binds its own address),
        which is said.
        """
        if self.plan.mode is not HandoffMode.BIND:
            self._say_the_plan()
            self._fork(before_exec)
            return
        from .bindtrap import Pending, refusal

        pending = Pending()
        environment = dict(self.child_env)  # as it was before the spawn added to it
        self._fork((*before_exec, pending.install_in_child))
        spawned = self.exec_outcome()
        why = refusal(spawned.message) if isinstance(spawned, ExecFailure) else None
        if why is None:
            self._say_the_plan()
            self.bind_notify_fd = pending.receive()
            return
        pending.close()
        self._replan(why)
        self._say_the_plan()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.child_env = environment
        self._fork(before_exec)

    def exec_outcome(self) -> int | ExecFailure:
        """The child's pid once it has exec'd, or why it could not start (read once)."""
        if isinstance(self._child, Started):
            outcome = self._child.outcome()
            if isinstance(outcome, ExecFailure):
                self._close_pipes()
            else:
                self._arm(outcome)
            self._child = outcome
        assert self._child is not None, "exec_outcome() before spawn()"
        return self._child

    def _replan(self, bind_unavailable: str) -> None:
        config = self.config
        self.plan = plan_handoff(config.handoff.value, config.command, config.host,
                                 config.port, config.health_port, self.environ, bind_unavailable)

    def _fork(self, before_exec: tuple[Callable[[], None], ...]) -> None:
        # On a terminal the child gets it for stderr too (job control needs a
        # tty there): nothing is relayed, and no tail kept.
        stderr_read = stderr_write = None
        if not self.interactive:
            stderr_read, stderr_write = os.pipe()
            enlarge_pipe(stderr_write)
        stdout_read = stdout_write = None
        if self.config.relay_stdout:
            stdout_read, stdout_write = os.pipe()
            enlarge_pipe(stdout_write)
        pass_fds = {}
        if self.listener is not None and self.plan.passes_socket:
            pass_fds[SYSTEMD_FIRST_FD] = self.listener.fileno()
        self.child_env.update(self.plan.env)
        self._prepare_forensics()
        self._child = start(ChildSpec(
            argv=self._argv_for_child(),
            env=self.child_env,
            stderr_fd=stderr_write,
            stdout_fd=stdout_write,
            pass_fds=pass_fds,
            set_listen_pid=self.plan.mode is HandoffMode.SYSTEMD,
            before_exec=before_exec,
            take_terminal=self.interactive,
            die_with_parent=os.getpid() != 1,
        ))
        for fd in (stderr_write, stdout_write):
            if fd is not None:
                os.close(fd)
        self.pipes = (stderr_read, stdout_read)
        if isinstance(self._child, ExecFailure):
            self._close_pipes()

    def _close_pipes(self) -> None:
        for fd in self.pipes:
            if fd is not None:
                os.close(fd)
        self.pipes = (None, None)

    def _prepare_forensics(self) -> None:
        """The import profile's variable for a Python child (``forensics`` imports only os)."""
        from .forensics import Forensics, budget_of

        config = self.config
        self.forensics = Forensics(
            self.reactor, self.log, self.started_mono,
            config.stack_interval_s,
            budget_of(config.platform, config.health_check),
        )
        self.forensics.prepare(self.plan.argv, self.child_env,
                               disabled=config.no_import_profile)


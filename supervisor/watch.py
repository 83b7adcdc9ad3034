"""Watching the running child: memory samples, the warning, the termination log.

Owns: when memory is sampled (a reactor timer), what happens on the warning
(a line, and a Sentry event through the notifier), and the periodic status
line in the termination log.
Must not know: how memory is measured (``memory``) or the run's other state;
the loop passes in what it needs as callables.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from .log import Logger
    from .loop import Supervisor
    from .memory import MemoryFacts, MemoryWatcher
    from .reactor import Reactor
    from .termination_log import TerminationLog

TERMINATION_STATUS_EVERY_S = 10.0


class Watch:
    """The memory watcher and the termination log, ticking on the reactor."""

    def __init__(
        self, reactor: Reactor, log: Logger, memory: MemoryWatcher, interval_s: float,
        termination_log: TerminationLog, phase: Callable[[], str],
        alive: Callable[[], bool], warn: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._reactor = reactor
        self._log = log
        self.memory = memory
        self.termination_log = termination_log
        self._phase = phase
        self._alive = alive
        self._warn = warn
        reactor.call_every(interval_s, self._sample)
        if termination_log.enabled:
            self.write_status()
            reactor.call_every(TERMINATION_STATUS_EVERY_S, self.write_status)

    def _sample(self) -> bool:
        if not self._alive():
            return False
        warning = self.memory.sample()
        if warning is not None:
            self._log.warning(warning.message())
            self._warn(warning.message(), self._warning_context())
        if self.memory.disabled_reason is not None:
            self._log.warning(self.memory.disabled_reason)
            return False
        return True

    def _warning_context(self) -> dict[str, Any]:
        last = self.memory.last_sample
        if last is None or last.cgroup is None:
            return {}
        return {"usage_bytes": last.cgroup.usage_bytes,
                "cgroup_limit_bytes": last.cgroup.limit_bytes,
                "peak_rss_bytes": last.tree_rss_bytes}

    def write_status(self) -> bool:
        if self.termination_log.enabled:
            self.termination_log.write_status(
                f"supervisor: {self._phase()}; {self.memory.status()}"
            )
        return self._alive()

    def finish(self, max_rss_bytes: Optional[int], killed_by_sigkill: bool) -> MemoryFacts:
        return self.memory.finish(max_rss_bytes, killed_by_sigkill=killed_by_sigkill)



def create_memory_watcher(sup: Supervisor) -> MemoryWatcher:
    """The child's memory watcher, started; also made at the end for wait4's figures."""
    assert sup.pid is not None
    from .memory import MemoryWatcher

    config = sup.config
    watcher = MemoryWatcher(
        config.memory_interval_s, config.memory_warn, clock=sup.reactor.clock,
        cgroup=sup.cgroup.memory if sup.cgroup is not None else None,
    )
    watcher.start(sup.pid, sup.started_mono)
    return watcher

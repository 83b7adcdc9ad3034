"""What the loop hands over when the child is gone, gathered from its fields.

Owns: building ``RunFacts`` (with the memory facts, from the watcher or from
wait4 alone), the parts ``finish`` needs, and ending a one-shot command that
needs no report at all.
Must not know: how a cause is decided or a report made (``causes``, ``finish``).
"""

from __future__ import annotations

import signal
import time

from .child import ExitStatus
from .handoff import HandoffMode
from .output import FINAL_FLUSH_S

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: a one-shot command's exit imports nothing
if TYPE_CHECKING:
    from typing import Optional

    from .child import ExecFailure
    from .facts import RunFacts
    from .finish import FinishParts
    from .loop import Supervisor
    from .memory import MemoryFacts


def end_quiet_one_shot(sup: Supervisor, exec_failure: Optional[ExecFailure]) -> bool:
    """End a command that served nothing, exited 0 unasked, and nobody wants a report.

    ``finish`` would print no block and send nothing for it (cause ``exited``
    without a hand-off), so its imports are skipped: a short command then
    costs little more than tini. Whatever could make ``classify`` call it a
    crash rules this out: a traceback in the tail (hypercorn exits 0 after its
    worker's), a crash loop, a start-up timeout.
    """
    watch = sup.watch
    startup = sup.startup
    served = sup.plan.mode is not HandoffMode.NONE and not _bind_unanswered(sup)
    tail = sup.tail.text() if sup.tail is not None else ""
    quiet = (
        exec_failure is None and sup.reaped is not None and sup.reaped.wait_status == 0
        and not served and sup.stop_signal is None
        and not sup.config.report_file and sup.health_check is None
        and (watch is None or not watch.termination_log.enabled)
        and (startup is None or (startup.crash is None and not startup.timed_out))
        and "Traceback" not in tail and 'File "' not in tail
    )
    if not quiet:
        return False
    if sup.stub is not None:  # a health check that came meanwhile still gets its answer
        sup.stub.take_back("exited")  # Cause.EXITED, without importing causes
        sup.stub.linger(sup.listener)
    for sink in sup.sinks:  # what the child wrote last still goes out
        sink.flush(sup.reactor.clock() + FINAL_FLUSH_S, sup.reactor.clock)
    return True


def _bind_unanswered(sup: Supervisor) -> bool:
    """The child was to bind the public address itself, and never did."""
    trap = sup.bind_trap
    return sup.plan.mode is HandoffMode.BIND and (trap is None or not trap.answered)


def run_facts(sup: Supervisor, exec_failure: Optional[ExecFailure]) -> RunFacts:
    from .facts import RunFacts

    exit = None if sup.reaped is None else ExitStatus.from_wait_status(sup.reaped.wait_status)
    startup = sup.startup
    return RunFacts(
        command=tuple(sup.config.command),
        argv=tuple(sup.plan.argv),
        handoff="none" if _bind_unanswered(sup) else sup.plan.mode.value,
        pid=sup.pid,
        started_at=sup.started_at,
        ended_at=time.time(),
        uptime_s=sup.uptime(),
        phase=sup.phase.value,
        ready_after_s=sup.ready_after_s,
        signals=tuple(sup.signals),
        forwarded=frozenset(sup.forwarded),
        stop_signal=sup.stop_signal,
        stop_timeout_s=sup.config.stop_timeout_s,
        stop_timed_out=sup.stop_timed_out,
        startup_timed_out=startup is not None and startup.timed_out,
        startup_summary=startup.summary if startup is not None else "",
        exit=exit,
        exec_failure=exec_failure,
        memory=_memory_facts(sup, exit),
        stderr_tail=sup.tail.text() if sup.tail is not None else "",
        interactive=sup.interactive,
    )

def _memory_facts(sup: Supervisor, exit: Optional[ExitStatus]) -> Optional[MemoryFacts]:
    if sup.reaped is None or exit is None:
        return None
    # It may have ended before the watchers started: wait4's figures still count.
    from .watch import create_memory_watcher

    memory = sup.watch.memory if sup.watch is not None else create_memory_watcher(sup)
    facts: MemoryFacts = memory.finish(sup.reaped.max_rss_bytes,
                                       killed_by_sigkill=exit.signal == signal.SIGKILL)
    return facts

def finish_parts(sup: Supervisor) -> FinishParts:
    from .finish import FinishParts

    result = sup.health_check.result() if sup.health_check is not None else None
    return FinishParts(
        config=sup.config, reactor=sup.reactor, log=sup.log, redact=sup.redact,
        notifier=sup.notifier, sinks=sup.sinks, stub=sup.stub, listener=sup.listener,
        termination_log=sup.watch.termination_log if sup.watch is not None else None,
        health_check=result, conditions=sup.conditions, child_env=sup.child_env,
        environ=sup.environ, forensics=sup.forensics,
        startup_crash=sup.startup.crash if sup.startup is not None else None,
    )

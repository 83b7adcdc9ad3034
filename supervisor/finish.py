"""The end of a run: cause, report, the human block, Sentry, then the exit status.

Owns: the order of the last steps and building the ``Report`` from
``RunFacts``. The report file comes first (quick, and the block says whether
it exists), the block second, Sentry third (bounded by its timeout, the stub
and signals still served meanwhile), the termination log last.
Must not know: how the facts were gathered, or how a cause is decided.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Optional

from .causes import Cause, Outcome, classify
from .output import FINAL_FLUSH_S
from .pid1 import signal_name
from .report import Report, SignalRecord, exception_json, human_block, where_text

if TYPE_CHECKING:
    import socket

    from .config import Config
    from .facts import RunFacts
    from .forensics import ForensicFacts, Forensics
    from .health import HealthStub
    from .log import Logger
    from .notify import Notifier
    from .output import Sink
    from .reactor import Reactor
    from .redact import Redactor
    from .termination_log import TerminationLog
    from .tracebacks import ParsedTraceback
    from .verdict import HealthCheckResult



@dataclasses.dataclass
class FinishParts:
    """The parts of the supervisor that the last steps use."""

    config: Config
    reactor: Reactor
    log: Logger
    redact: Redactor
    notifier: Notifier
    sinks: list[Sink]
    stub: Optional[HealthStub] = None
    listener: Optional[socket.socket] = None
    termination_log: Optional[TerminationLog] = None
    health_check: Optional[HealthCheckResult] = None
    conditions: Optional[dict[str, Any]] = None  # what the run imposed, said at start
    child_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)
    forensics: Optional[Forensics] = None
    # The loop stopped the child because it kept dying at start-up with this traceback.
    startup_crash: Optional[ParsedTraceback] = None


def finish(facts: RunFacts, parts: FinishParts) -> int:
    """Decide, report and deliver; return the supervisor's own exit status."""
    outcome = classify(dataclasses.replace(facts.ending(), startup_crash=parts.startup_crash))
    if parts.stub is not None:
        # Accept again at once: what waits in the backlog gets the cause, not a refusal.
        parts.stub.take_back(outcome.cause.value)
    found = _forensic_facts(facts, outcome, parts)
    report = redacted(build_report(facts, outcome, parts, found), parts.redact)
    from .assessment import advice_lines, hypotheses_section

    guesses, guess_lines = hypotheses_section(report.as_json())
    report = dataclasses.replace(report, extra={**report.extra, "hypotheses": guesses})
    report_error = _write_report(parts.config, report)
    verdict = report.extra.get("health_check", {}).get("verdict")
    # A one-shot command (a migration, a script) that did its job: nothing to explain.
    one_shot_done = outcome.cause is Cause.EXITED and facts.handoff == "none"
    if not one_shot_done:
        parts.log.block(
            human_block(report, parts.config.report_file, verdict, report_error,
                        startup=found.waterfall if found is not None else (),
                        hypotheses=guess_lines if outcome.cause.is_crash else (),
                        advice=advice_lines(report.extra)),
            level="error" if outcome.cause.is_crash else "info", cause=report.cause,
        )
    if parts.notifier.enabled and outcome.cause.is_crash and not one_shot_done:
        sent = parts.notifier.send_crash(report.as_json())
        report = dataclasses.replace(
            report, sentry_event_id=sent.get("sentry_event_id"),
            extra={**report.extra, "sentry": sent["sentry"]},
        )
        _write_report(parts.config, report)
    if parts.termination_log is not None and parts.termination_log.enabled:
        parts.termination_log.write_final(f"{report.cause}: {report.summary}")
    if parts.stub is not None:
        parts.stub.linger(parts.listener)
    deadline = parts.reactor.clock() + FINAL_FLUSH_S
    for sink in parts.sinks:
        sink.flush(deadline, parts.reactor.clock)
    return outcome.status


def _forensic_facts(facts: RunFacts, outcome: Outcome, parts: FinishParts,
                    ) -> Optional[ForensicFacts]:
    if parts.forensics is None:
        return None
    killed = facts.exit is not None and facts.exit.signal is not None
    return parts.forensics.facts(facts.uptime_s, facts.ready_after_s, killed,
                                 crashed=outcome.cause.is_crash)


def build_report(
    facts: RunFacts, outcome: Outcome, parts: FinishParts,
    found: Optional[ForensicFacts] = None,
) -> Report:
    config = parts.config
    memory = facts.memory
    extra: dict[str, Any] = {"handoff": facts.handoff}
    if facts.interactive:
        extra["stderr_tail_kept"] = False  # the child wrote to the terminal itself
    where = where_text(outcome)
    if found is not None:
        if found.startup is not None:
            extra["startup"] = found.startup
        if outcome.traceback is None and outcome.fault is None and found.last_stack:
            # No stack from the app itself: where it was last seen, with the sample's age.
            extra["last_stack"] = found.last_stack
            where = where or found.where
    if outcome.cause is Cause.OOM_KILLED and memory is not None:
        extra["oom_evidence"] = memory.oom_evidence
    from .assessment import judged_sections

    extra.update(judged_sections(
        facts, outcome, config, where_text(outcome), parts.health_check, parts.conditions,
        parts.child_env, parts.environ,
    ))
    if config.memory_limit is not None or config.cpu_limit is not None:
        extra["limits"] = {"memory_bytes": config.memory_limit, "cpus": config.cpu_limit}
    exit = facts.exit
    return Report(
        cause=outcome.cause.value,
        summary=_with_fields(outcome, facts.stderr_tail),
        phase=facts.phase,
        exit_code=None if exit is None else exit.code,
        signal=None if exit is None or exit.signal is None else signal_name(exit.signal),
        status=outcome.status,
        command=facts.argv,
        pid=facts.pid,
        started_at=facts.started_at,
        ended_at=facts.ended_at,
        uptime_s=facts.uptime_s,
        ready_after_s=facts.ready_after_s,
        signals_received=tuple(SignalRecord(name, at) for name, at in facts.signals),
        exception=exception_json(outcome),
        stderr_tail=facts.stderr_tail,
        where=where,
        memory=memory.as_report() if memory is not None else None,
        memory_line=memory.sparkline() if memory is not None else None,
        extra=extra,
    )


def _with_fields(outcome: Outcome, tail: str) -> str:
    """pydantic's "1 validation error for Settings" names no field; the next lines do."""
    exception = outcome.traceback.exception if outcome.traceback is not None else None
    if exception is None or not exception.type.endswith("ValidationError"):
        return outcome.summary
    from .hypotheses import validation_fields

    fields = validation_fields(tail)
    return f"{outcome.summary} ({', '.join(fields)})" if fields else outcome.summary


def redacted(report: Report, redact: Redactor) -> Report:
    """The one redaction pass: every string of the report, before anything leaves.

    The file, the block, the termination log and Sentry are all made from what
    this returns, so no output can miss a secret that another one masks.
    """
    fields = {field.name: getattr(report, field.name) for field in dataclasses.fields(report)}
    masked = {name: redact.json(value) for name, value in fields.items() if name != "command"}
    return Report(command=tuple(redact.argv(report.command)), **masked)


def _write_report(config: Config, report: Report) -> Optional[str]:
    """Write the report file if asked; return why it could not be written."""
    if not config.report_file:
        return None
    from .report import write_report_file

    try:
        write_report_file(config.report_file, report.as_json())
    except OSError as error:
        return error.strerror or str(error)
    return None

"""What a run means for a deployment: the report's sections that judge it.

Owns: putting together the platform's verdict over the whole run, the advice
on health-check settings, the conditions that were imposed, the run's
environment (names and fingerprints, never values) and the hypotheses, from
``RunFacts``, the outcome and the finished report.
Must not know: how any of them is decided (``verdict``, ``advice``,
``conditions``, ``hypotheses`` do that); this only feeds them and places
their answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from .pid1 import signal_name

if TYPE_CHECKING:
    from .causes import Outcome
    from .config import Config
    from .facts import RunFacts
    from .verdict import HealthCheckResult


def judged_sections(
    facts: RunFacts, outcome: Outcome, config: Config, where: Optional[str],
    result: Optional[HealthCheckResult], conditions: Optional[dict[str, Any]],
    child_env: Mapping[str, str], environ: Mapping[str, str],
) -> dict[str, Any]:
    """``health_check``, ``advice``, ``conditions`` and ``environment``, as JSON."""
    sections: dict[str, Any] = {}
    spec = config.health_check
    if result is not None and spec is not None:
        from .verdict import ChildEnd, decide, health_check_report

        exit = facts.exit
        end = None if exit is None else ChildEnd.of(
            facts.uptime_s, exit.code, None if exit.signal is None else signal_name(exit.signal),
            outcome.cause.value, requested=facts.stop_signal is not None,
            ready_at_s=facts.ready_after_s,
        )
        decision = decide(config.platform, result, spec, where, end)
        sections["health_check"] = health_check_report(result, decision, spec)
        from .advice import advise, wants_advice

        if wants_advice(outcome.cause.value, facts.ready_after_s):
            sections["advice"] = advise(
                config.platform_name, spec, facts.ready_after_s, facts.uptime_s,
                config.health_path,
            ).as_json()
    from .conditions import conditions as imposed
    from .conditions import environment_section

    sections["conditions"] = conditions or imposed(config, environ, child_env)
    memory = facts.memory
    sections["environment"] = environment_section(
        child_env, environ, facts.argv, memory.cgroup_version if memory is not None else None
    )
    return sections


def hypotheses_section(report: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    """The hypotheses as JSON and as lines, read from the finished (redacted) report."""
    from .hypotheses import RunEvidence, hypotheses, hypothesis_lines

    found = hypotheses(RunEvidence.from_report(report))
    return [h.as_json() for h in found], hypothesis_lines(found)


def advice_lines(report: Mapping[str, Any]) -> list[str]:
    advice = report.get("advice")
    if not advice:
        return []
    from .advice import advice_lines as lines

    return lines(advice)

"""Start-up forensics, seen from the loop: the import profile and the stack samples.

Owns: whether this child gets ``PYTHONPROFILEIMPORTTIME`` (before the spawn),
the relay filter that feeds the profile, when the stack is sampled (every
``--stack-interval`` while starting, on the memory warning, just before a
stop grace runs out), the one line for a healthy start, and the report's
``startup``, ``last_stack`` and sampled ``where``.
Must not know: how lines are parsed (``importprofile``), how py-spy is run
(``stacks``), or how the report is shown.

Imported on the path to the spawn: only ``importprofile`` (which imports
``os`` and ``values``) is imported at the top; the sampler is imported when
it starts, after the stub's first answers.
"""

from __future__ import annotations

from .importprofile import ENV_NAME, ImportProfile, wants_import_profile
from .values import frozen

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Sequence

    from .log import Logger
    from .reactor import Reactor
    from .relay import ImportLineFilter
    from .stacks import StackSample, StackSampler

STACK_INTERVAL_S = 1.0
# A sample for a stop grace is taken this long before the SIGKILL (a dump takes 0.03-0.3 s).
BEFORE_KILL_S = 1.0
# Frames of the interpreter's own machinery; ``where`` names the app's frame instead.
_NOT_APP = ("<frozen ", "/site-packages/", "/dist-packages/", "/lib/python")


@frozen
class ForensicFacts:
    """What the report gets from the forensics when the child is gone."""

    startup: Optional[dict[str, Any]]  # the report's ``startup`` object
    last_stack: Optional[dict[str, Any]]  # the last sample, with its age
    where: Optional[str]  # for a death without a traceback, from the last sample
    waterfall: tuple[str, ...]  # lines for the human block


class Forensics:
    """The import profile and the stack sampler of one child."""

    def __init__(
        self, reactor: Reactor, log: Logger, started: float,
        interval_s: float = STACK_INTERVAL_S, budget: Optional[tuple[str, float]] = None,
    ) -> None:
        self._reactor = reactor
        self._log = log
        self._started = started
        self._interval_s = interval_s
        self._budget = budget
        self.profile: Optional[ImportProfile] = None
        self.sampler: Optional[StackSampler] = None
        self._python = False

    # -- before the spawn --------------------------------------------------------
    def prepare(self, argv: Sequence[str], env: dict[str, str], disabled: bool) -> None:
        """Decide for the child: the variable goes into ``env`` when the profile is on."""
        from .importprofile import is_python_command

        self._python = is_python_command(argv, env.get("PATH"))
        if self._python and wants_import_profile(argv, env, disabled):
            env[ENV_NAME] = "1"
            self.profile = ImportProfile()

    def line_filter(self) -> Optional[ImportLineFilter]:
        """The stderr relay's filter, when the supervisor asked for the lines."""
        if self.profile is None:
            return None
        from .relay import import_filter

        return import_filter(self.profile, self._reactor.clock, self._started)

    # -- while it runs -----------------------------------------------------------
    def start_sampling(self, pid: int, starting: Callable[[], bool], environ_path: Optional[str],
                       ) -> None:
        """Sample every interval while ``starting()``; a Python child only."""
        if not self._python or self._interval_s <= 0:
            return
        from .stacks import StackSampler, find_py_spy

        self.sampler = StackSampler(self._reactor, pid, self._started, self._log.warning,
                                    binary=find_py_spy(environ_path))

        def tick() -> bool:
            if not starting() or self.sampler is None or not self.sampler.on:
                return False
            self.sampler.sample("starting")
            return True

        if self.sampler.on:
            self._reactor.call_every(self._interval_s, tick)

    def sample(self, why: str) -> None:
        """One sample now (the memory warning); nothing when sampling is off or busy."""
        if self.sampler is not None:
            self.sampler.sample(why)

    def sample_before(self, delay_s: float, why: str) -> None:
        """A sample shortly before a deadline ``delay_s`` from now (a stop grace)."""
        if self.sampler is not None:
            self._reactor.call_later(max(0.0, delay_s - BEFORE_KILL_S), lambda: self.sample(why))

    def on_ready(self, ready_after_s: float) -> None:
        """One line for a healthy start, and a warning past half the platform's budget."""
        if self.profile is None:
            return
        startup = self.profile.startup().as_json()
        from .importprofile import over_half_budget, waterfall

        lines = waterfall(startup, ready_after_s, budget=self._budget)
        self._log.info("start-up: " + "; ".join(lines))
        if over_half_budget(ready_after_s, self._budget):
            assert self._budget is not None
            slowest = ", ".join(item["module"] for item in startup["slowest_imports"][:3])
            self._log.warning(
                f"ready after {ready_after_s:.1f} s, more than half of {self._budget[0]}'s "
                f"{self._budget[1]:g} s; slowest imports: {slowest or 'none timed'}"
            )

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()

    # -- at the end --------------------------------------------------------------
    def facts(self, ended_s: float, ready_after_s: Optional[float],
              killed: bool, crashed: bool) -> ForensicFacts:
        startup = None
        if self.profile is not None and self.profile.count:
            startup = self.profile.startup().as_json()
        if startup is not None and self.sampler is not None:
            startup["stack_samples"] = self.sampler.samples
            if self.sampler.off_reason is not None:
                startup["stack_sampling"] = f"off: {self.sampler.off_reason}"
        sample = self.sampler.last if self.sampler is not None else None
        if sample is not None and (not crashed or (
                ready_after_s is not None and sample.at_s < ready_after_s)):
            # A clean stop needs no stack; a sample from before readiness says
            # nothing about a death after it.
            sample = None
        last_stack = sample.as_json(ended_s) if sample is not None else None
        where = where_from_sample(sample, ended_s, killed) if sample is not None else None
        lines: list[str] = []
        if crashed and startup is not None:
            from .importprofile import waterfall

            lines = waterfall(startup, ready_after_s, ended_s, self._budget)
        return ForensicFacts(startup, last_stack, where, tuple(lines))


def where_from_sample(sample: StackSample, ended_s: float, killed: bool) -> Optional[str]:
    """``file:line in function (importing; sampled 0.4 s before the kill)``."""
    main = sample.main
    if main is None or not main.frames:
        return None
    frames = main.frames
    app = [f for f in frames if not any(part in f.filename for part in _NOT_APP)]
    frame = (app or list(frames))[-1]
    age = max(0.0, ended_s - sample.at_s)
    notes = []
    modules = [f for f in frames[1:] if f.function == "<module>"]
    if modules and modules[-1] == frame:
        notes.append("being imported")
    elif modules:
        notes.append(f"while importing {modules[-1].filename}")
    notes.append(f"sampled {age:.1f} s before the {'kill' if killed else 'end'}")
    return f"{frame.text()} ({'; '.join(notes)})"


def budget_of(platform: Optional[str], health_check: Any) -> Optional[tuple[str, float]]:
    """How long the platform's health check lets a new instance start: (who, seconds)."""
    if health_check is None:
        return None
    seconds = (float(getattr(health_check, "grace_s", 0.0))
               + float(health_check.interval_s) * int(health_check.unhealthy_threshold))
    return (platform or "the health check", seconds)

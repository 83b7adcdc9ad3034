"""Where the child is in its life, and which moves between phases are allowed.

Owns: the ``Phase`` values the report names and the table of transitions;
``Supervisor._enter`` is the one place that moves along it.
Cheap to import: the loop holds a phase from before the spawn.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """Where the child was in its life; the report says which phase it died in."""

    STARTING = "starting"  # spawned, not yet ready
    RUNNING = "running"  # ready and serving (or readiness is not tracked)
    STOPPING = "stopping"  # a stop signal was forwarded


# Every allowed move; ``Supervisor._enter`` is the only place the phase changes.
TRANSITIONS = {
    Phase.STARTING: (Phase.RUNNING, Phase.STOPPING),
    Phase.RUNNING: (Phase.STOPPING,),
    Phase.STOPPING: (),
}

"""Moved: the decision is in ``verdict``, the probing thread in ``prober``.

Kept only until every caller imports from those two; nothing new uses it.
"""

from __future__ import annotations

from .prober import PlatformHealthCheck
from .verdict import CheckState, HealthCheckResult, Probe, ProbeKind, verdict_text

__all__ = [
    "CheckState",
    "HealthCheckResult",
    "PlatformHealthCheck",
    "Probe",
    "ProbeKind",
    "verdict_text",
]

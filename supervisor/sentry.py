"""The Sentry names of the old single module, for callers that have not moved yet.

Owns nothing: the event is built in ``sentry_event`` (with ``sentry_context``)
and delivered by ``sentry_delivery``. Import from those; this module goes
once its last callers have moved.
"""

from __future__ import annotations

from supervisor.sentry_delivery import Delivery, deliver, new_event_id, send_saved_report
from supervisor.sentry_event import attachments_for, build_event, build_warning_event

__all__ = [
    "Delivery",
    "attachments_for",
    "build_event",
    "build_warning_event",
    "deliver",
    "new_event_id",
    "send_saved_report",
]

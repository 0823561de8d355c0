"""What a transition is to its receivers: a message for people, or state that only a state-keeping receiver needs.

Two kinds of resolution are state, not news:

* a **replaced** alert (``metadata["replaced_by"]``, set by the evaluator): the alert of a level that another level
  took over (critical -> emergency, or back). The firing alert of the new level says "critical -> emergency", so
  "RESOLVED: critical" next to it would be a second, misleading message for the same event.
* the end of a **notice** (``metadata["notice"]`` is True): a one-off message such as "memmon recycled worker
  4242"; it fires once for people and ends quietly when its coalescing window closes.

Such resolutions are still recorded in the alert log, seen by custom handlers and pushed to channels that keep
alert state (Alertmanager, whose alert must end), but the log line and the Slack, webhook and email channels skip
them. A channel keeps state when it is a :class:`~memmon.alerting.channel.StatefulChannel`.
"""

from __future__ import annotations

from memmon.alerting.channel import StatefulChannel
from memmon.model import Alert

REPLACED_BY = "replaced_by"
"""Metadata key: the level (label) whose alert replaced this one."""
NOTICE = "notice"
"""Metadata key: True for a one-off notice (an action and its result), not a condition that holds."""


def replaced_by(alert: Alert) -> str | None:
    """The level label that replaced ``alert``, None when it was not replaced (or is still firing)."""
    value = alert.metadata.get(REPLACED_BY)
    return str(value) if alert.state == "resolved" and value else None


def is_notice(alert: Alert) -> bool:
    """True for a notice (firing or ended), which its producer has rate-limited already."""
    return alert.metadata.get(NOTICE) is True


def is_silent(alert: Alert) -> bool:
    """A resolution that is state only: a replaced alert, or the end of a notice."""
    return alert.state == "resolved" and (replaced_by(alert) is not None or is_notice(alert))


def tracks_state(channel: object) -> bool:
    """Whether ``channel`` keeps alert state (a :class:`StatefulChannel`) and so must see silent resolutions."""
    return isinstance(channel, StatefulChannel)

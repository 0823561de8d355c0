"""An :class:`~memmon.model.Alert` as a row of SQLite values, for the alert log and the delivery spool.

Twelve values in the Alert's field order; the severity as its label, the metadata as a JSON object (values JSON
cannot hold are stored as their ``str()``, and keys that are not strings are skipped rather than losing the
alert over its metadata).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from memmon.model import Alert, Level, frozen_mapping

ALERT_ROW_WIDTH = 12


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def metadata_json(metadata: Mapping[str, object]) -> str:
    """The metadata as a JSON object (see the module docstring for what does not round-trip exactly)."""
    try:
        return json.dumps(dict(metadata), sort_keys=True, default=_json_default)
    except TypeError:  # keys of mixed or non-JSON types in a nested mapping: keep the alert, skip those keys
        return json.dumps(dict(metadata), default=_json_default, skipkeys=True)


def alert_row(alert: Alert) -> tuple[object, ...]:
    """The row of ``alert``."""
    return (
        alert.id,
        alert.fingerprint,
        alert.severity.label,
        alert.component,
        alert.target,
        alert.state,
        alert.started_at,
        alert.resolved_at,
        alert.memory_usage,
        alert.threshold,
        alert.message,
        metadata_json(alert.metadata),
    )


def alert_from_row(row: Sequence[Any]) -> Alert:
    """The alert of a row made by :func:`alert_row`; ``ValueError`` when the metadata is not a JSON object."""
    metadata = json.loads(row[11])
    if not isinstance(metadata, dict):
        raise ValueError(f"alert {row[0]!r} metadata is not a JSON object")
    return Alert(
        id=row[0],
        fingerprint=row[1],
        severity=Level.parse(row[2]),
        component=row[3],
        target=row[4],
        state=row[5],
        started_at=row[6],
        resolved_at=row[7],
        memory_usage=row[8],
        threshold=row[9],
        message=row[10],
        metadata=frozen_mapping(metadata),
    )

"""Which targets an agent watches: the fixed entries of ``targets`` once, and each glob pattern's matches,
re-resolved every ``interval`` seconds while the agent runs (a unit that starts appears, one that stops is
missing, then forgotten by ``memmon.app`` after ``monitoring.forget_missing_targets_seconds``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from memmon.config import Settings
from memmon.config.actions import AutoResponseSettings
from memmon.sampling.cgroup_location import cgroups_matching

ROSTER_INTERVAL_SECONDS = 5.0
"""How often glob patterns are re-resolved: a new unit is watched within this (one directory walk each)."""


@dataclass(frozen=True)
class RosterChange:
    """The matches a refresh found that are not watched yet, each with its own settings."""

    added: tuple[tuple[str, Settings], ...]


class Roster:
    """The targets of ``settings``: ``fixed()`` entries by name, and pattern matches from ``refresh``.

    ``resolve(pattern, unit)`` lists the hierarchy paths matching a pattern (default: the cgroup tree,
    ``memmon.sampling.cgroup_location.cgroups_matching``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        resolve: Callable[..., list[str]] = cgroups_matching,
        interval: float = ROSTER_INTERVAL_SECONDS,
    ) -> None:
        self.settings = settings
        self.resolve = resolve
        self.interval = interval
        entries = settings.targets
        self._fixed = [entry for entry in entries if not entry.is_pattern]
        self._patterns = [entry for entry in entries if entry.is_pattern]
        self._from_pattern: set[str] = set()

    @property
    def has_patterns(self) -> bool:
        """Whether any entry is a glob (re-resolved while running)."""
        return bool(self._patterns)

    def fixed(self) -> list[tuple[str, Settings]]:
        """The entries that name one target each: (name, its settings), in config order."""
        result = []
        for entry in self._fixed:
            name = entry.default_name()
            assert name is not None  # only a pattern has no name before it matches
            result.append((name, self.settings.for_target(entry)))
        return result

    def host_settings(self) -> Settings:
        """The host's settings: judged on system and swap thresholds, nothing acted on, no leak detection."""
        monitoring = self.settings.monitoring
        return self.settings.model_copy(
            update={
                "targets": [],
                "auto_response": AutoResponseSettings.model_validate(
                    {"enabled": False, "memory_high_guard": {"enabled": "off"}, "kubernetes_events": False}
                ),
                "monitoring": monitoring.model_copy(
                    update={
                        "leak_detection": monitoring.leak_detection.model_copy(update={"enabled": False}),
                        "usage_watch": monitoring.usage_watch.model_copy(update={"enabled": False}),
                        "kernel_events": False,
                    }
                ),
                "experimental": self.settings.experimental.model_copy(update={"predictive_alerting": False}),
            }
        )

    def refresh(self, known: set[str]) -> RosterChange:
        """Resolve every pattern now; the matches not in ``known`` (names), with their settings."""
        added: list[tuple[str, Settings]] = []
        for entry in self._patterns:
            unit = entry.unit is not None
            pattern = entry.unit if unit else entry.cgroup
            assert pattern is not None
            for path in self.resolve(pattern, unit=unit):
                leaf = path.rpartition("/")[2]
                shown = leaf if unit else path
                name = f"{entry.name}:{shown}" if entry.name else f"cgroup:{shown}"
                if name in known or name in (n for n, _ in added):
                    continue
                concrete = entry.model_copy(
                    update={"cgroup": path, "unit": leaf if unit else None, "name": name}
                )
                self._from_pattern.add(name)
                added.append((name, self.settings.for_target(concrete)))
        return RosterChange(tuple(added))

    def matched(self, known: set[str]) -> list[str]:
        """The watched names that came from a pattern (these may be forgotten; fixed entries never are)."""
        return sorted(name for name in known if name in self._from_pattern)

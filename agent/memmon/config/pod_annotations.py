"""Per-pod settings from ``memmon.io/*`` annotations (node mode), validated like a ``targets`` entry.

A pod's owner sets its own thresholds, restart and routing without touching the agent's config::

    memmon.io/watch: "true"                     # opt in (node.select: annotated); "false" opts out
    memmon.io/memory-percent-warning: "70"      # also -critical, -emergency (percent of the limit)
    memmon.io/restart: signal                   # evict | signal | none (over node.restart)
    memmon.io/grace-seconds: "20"               # the graceful restart's grace
    memmon.io/alert-channels: slack,webhook     # where this pod's alerts go, at every level

A wrong value is a problem naming the annotation and what it expects (the agent turns it into a Warning Event on
the pod, ``MemmonBadAnnotation``) and is left out; the pod is watched with the rest. Unknown ``memmon.io/`` keys are
problems too (a typo must not silently change nothing), except the ones memmon writes itself (level, since, reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memmon.config.actions import AutoResponseSettings
from memmon.config.alerting import CHANNELS
from memmon.config.sections import ThresholdSettings
from memmon.config.targets import TargetEntry, override_problems

PREFIX = "memmon.io/"
WRITTEN_BY_MEMMON = frozenset({"level", "since", "reason"})
"""Keys memmon annotates pods with (``memmon.actions.pod_reporter``): not settings."""
RESTARTS = ("evict", "signal", "none")
_TRUE, _FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})
_THRESHOLDS = {
    f"memory-percent-{level}": f"memory_percent_{level}" for level in ("warning", "critical", "emergency")
}


@dataclass(frozen=True)
class AnnotationProblem:
    """One annotation memmon could not use: its full key, its value, what is wrong and what it expects."""

    key: str
    value: str
    message: str
    expected: str

    def text(self) -> str:
        """``memmon.io/restart="reboot": unknown restart; expected evict, signal or none``."""
        return f"{self.key}={self.value!r}: {self.message}; expected {self.expected}"


@dataclass(frozen=True)
class PodOverrides:
    """What a pod's annotations ask for; ``problems`` lists the annotations left out."""

    watch: bool | None = None
    restart: str | None = None
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    auto_response: Mapping[str, Any] = field(default_factory=dict)
    channels: tuple[str, ...] | None = None
    problems: tuple[AnnotationProblem, ...] = ()


def is_setting(key: str) -> bool:
    """Whether an annotation key is one a pod's owner sets for memmon (not one memmon writes itself)."""
    return key.startswith(PREFIX) and key[len(PREFIX) :] not in WRITTEN_BY_MEMMON


def pod_overrides(
    annotations: Mapping[str, str], thresholds: ThresholdSettings, auto_response: AutoResponseSettings
) -> PodOverrides:
    """The ``memmon.io/*`` annotations of one pod, each checked against the global ``thresholds`` and
    ``auto_response`` it overrides."""
    watch: bool | None = None
    restart: str | None = None
    chosen_thresholds: dict[str, Any] = {}
    response: dict[str, Any] = {}
    channels: tuple[str, ...] | None = None
    problems: list[AnnotationProblem] = []
    for key, value in sorted(annotations.items()):
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        text = value.strip()

        def bad(message: str, expected: str, key: str = key, value: str = value) -> None:
            problems.append(AnnotationProblem(key, value, message, expected))

        if name in WRITTEN_BY_MEMMON:
            continue
        if name == "watch":
            if text.lower() in _TRUE | _FALSE:
                watch = text.lower() in _TRUE
            else:
                bad("not a boolean", '"true" or "false"')
        elif name == "restart":
            if text in RESTARTS:
                restart = text
            else:
                bad("unknown restart", "evict, signal or none")
        elif name in _THRESHOLDS:
            chosen_thresholds[_THRESHOLDS[name]] = text
        elif name == "grace-seconds":
            one = {"emergency_actions": {"graceful_restart": {"grace_seconds": text}}}
            entry = TargetEntry.model_construct(auto_response=one)
            found = override_problems(thresholds, auto_response, entry, "pod")
            if found:
                bad(found[0]["message"], str(found[0].get("expected") or "a number of seconds"))
            else:
                response = one
        elif name == "alert-channels":
            names = tuple(part.strip() for part in text.split(",") if part.strip())
            unknown = [part for part in names if part not in CHANNELS]
            if names and not unknown:
                channels = names
            else:
                bad(
                    f"unknown channel(s) {', '.join(unknown)}" if unknown else "no channel",
                    ", ".join(CHANNELS),
                )
        else:
            known = ["watch", "restart", *_THRESHOLDS, "grace-seconds", "alert-channels"]
            bad("unknown memmon annotation", "one of " + ", ".join(PREFIX + k for k in known))
    if chosen_thresholds:
        # Checked together: a pod raising all three levels is valid even where one alone would cross a global one.
        found = override_problems(
            thresholds, auto_response, TargetEntry.model_construct(thresholds=chosen_thresholds), "pod"
        )
        for item in found:
            named = [
                k for k, field_ in _THRESHOLDS.items() if field_ in item["at"] and field_ in chosen_thresholds
            ]
            for name in named or [k for k, field_ in _THRESHOLDS.items() if field_ in chosen_thresholds]:
                key = PREFIX + name
                expected = str(item.get("expected") or "a percent between 0 and 100")
                problems.append(AnnotationProblem(key, annotations[key], item["message"], expected))
        if found:
            chosen_thresholds = {}
    first_per_key = {problem.key: problem for problem in reversed(problems)}  # one Event per annotation
    problems = [problem for problem in problems if first_per_key[problem.key] is problem]
    return PodOverrides(watch, restart, chosen_thresholds, response, channels, tuple(problems))

"""Problem lines, and cross-field rules reported in the same run as the field errors.

pydantic runs a model's ``mode="after"`` validators only when all its fields validated, so a rule such as
"warning < critical" stayed silent while an unknown key or a bad value in the same section was reported, and
showed up only once those were fixed. ``RuleChecked`` runs the rules anyway: when fields fail, the model is
validated a second time without the failing entries (their defaults stand in), and the rules run on that
stand-in with ``unsure(path)`` true for every field whose given value failed, so that a rule skips what it
cannot judge instead of comparing against a default the configuration did not ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Self

from pydantic import ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = ["PROBLEMS", "RuleChecked", "Unsure", "problem", "problems_error"]

PROBLEMS = "memmon_problems"
"""The pydantic error type of ``problems_error``: its ctx ``problems`` holds one dict per output line."""
_UNSET: Any = object()

Unsure = Callable[[str], bool]
"""``unsure("a.b")``: whether the field at that dotted path (relative to the model) holds a stand-in."""

_STAND_IN: ContextVar[bool] = ContextVar("memmon_stand_in", default=False)
"""True while a stand-in is validated: the rules of the models inside it were already reported."""


def problem(message: str, *, at: str = "", got: Any = _UNSET, expected: str = "") -> dict[str, Any]:
    """One problem line: ``at`` is a dotted path relative to the failing field or section."""
    item: dict[str, Any] = {"at": at, "message": message, "expected": expected}
    if got is not _UNSET:
        item["got"] = got
    return item


def problems_error(*problems: dict[str, Any]) -> PydanticCustomError:
    """A validation error made of several ``problem`` lines (formatted by ``memmon.config``)."""
    summary = "; ".join(p["message"] for p in problems)
    return PydanticCustomError(PROBLEMS, "{summary}", {"summary": summary, "problems": list(problems)})


def _sure(_path: str) -> bool:
    return False


def _without(
    data: Mapping[str, Any], locs: list[tuple[str, ...]]
) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """``data`` without the entries at ``locs`` (copied, not changed), and the paths actually removed.

    A location is cut where the data stops being a mapping (``pids.0`` removes ``pids``: a list is replaced
    whole by its default).
    """
    result = dict(data)
    removed = []
    for loc in locs:
        node: dict[str, Any] = result
        for depth, part in enumerate(loc):
            if part not in node:
                break
            child = node[part]
            if depth == len(loc) - 1 or not isinstance(child, Mapping):
                del node[part]
                removed.append(loc[: depth + 1])
                break
            node[part] = dict(child)
            node = node[part]
    return result, removed


def _joined(exc: ValidationError, problems: list[dict[str, Any]]) -> ValidationError:
    """``exc``'s errors followed by one error holding ``problems`` (at the model's own location)."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError(error["type"], error["msg"], error.get("ctx")),
            loc=error["loc"],
            input=error["input"],
        )
        for error in exc.errors(include_url=False)
    ]
    details.append(InitErrorDetails(type=problems_error(*problems), loc=(), input=None))
    return ValidationError.from_exception_data(exc.title, details)


class RuleChecked:
    """Mixin of a pydantic model with cross-field rules: override ``rule_problems``."""

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """The problems of this model's cross-field rules; a rule reading a field for which
        ``unsure(dotted path)`` is true is skipped (that field's given value was invalid)."""
        return []

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if not _STAND_IN.get():
            problems = self.rule_problems(_sure)
            if problems:
                raise problems_error(*problems)
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _rules_despite_field_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(data)
        except ValidationError as exc:
            problems = cls._stand_in_problems(data, handler, exc)
            if not problems:
                raise
            raise _joined(exc, problems) from None

    @classmethod
    def _stand_in_problems(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], exc: ValidationError
    ) -> list[dict[str, Any]]:
        if cls.rule_problems is RuleChecked.rule_problems or not isinstance(data, Mapping):
            return []
        locs: list[tuple[str, ...]] = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"] if part != "[key]")
            if not loc:
                return []  # a problem of the model as a whole (its rules included): nothing more to learn
            if error["type"] == PROBLEMS:  # an inner model's rules: only the fields they name are unsure
                items = error["ctx"]["problems"]
                locs += [loc + tuple(item["at"].split(".")) if item["at"] else loc for item in items]
            else:
                locs.append(loc)
        rest, removed = _without(data, locs)
        token = _STAND_IN.set(True)
        try:
            stand_in = handler(rest)
        except ValidationError:
            return []
        finally:
            _STAND_IN.reset(token)

        def unsure(path: str) -> bool:
            parts = tuple(path.split("."))
            return any(parts[: len(loc)] == loc or loc[: len(parts)] == parts for loc in removed)

        return stand_in.rule_problems(unsure)

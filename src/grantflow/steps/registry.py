"""The step-type registry: built-in and third-party types, loaded from entry points."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import structlog
from pydantic import BaseModel

from grantflow.steps.execution import StepCall, StepResult

ENTRY_POINT_GROUP = "grantflow.steps"
log = structlog.get_logger("grantflow.steps")


@dataclass(frozen=True)
class Reference:
    """Something outside the document a step names, checked by the publish gate."""

    kind: str  # "connection" | "credential" | "application" | "user" | "role"
    name: str
    field: str  # where in the config, e.g. "connection"


def _no_references(_config: Any) -> list[Reference]:
    return []


def _always(_config: Any) -> bool:
    return True


def _as_is(rendered: dict[str, Any]) -> dict[str, Any]:
    return rendered


@dataclass(frozen=True)
class StepType:
    name: str
    summary: str
    config_model: type[BaseModel]
    # Does running this step change something outside Grantflow? (cancel and replay rules)
    side_effects: Callable[[Any], bool] = _always
    references: Callable[[Any], list[Reference]] = _no_references
    # Shape a rendered config into what a dry-run shows (e.g. the exact HTTP request).
    preview: Callable[[dict[str, Any]], dict[str, Any]] = _as_is
    # Extra publish-gate rules on the validated config: (field, message) pairs.
    checks: Callable[[Any], list[tuple[str, str]]] = field(default=lambda _c: [])
    # Run one attempt; raises ConnectorError subclasses to fail (classified) or returns a result.
    execute: Callable[[StepCall], StepResult] | None = None
    # Local steps do no I/O: their intent and outcome commit in one transaction.
    local: bool = False
    # Pure steps compute from the run context alone (no I/O, no database): between two steps
    # of a running run the engine checkpoints them in one guarded write.
    pure: bool = False


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


def step_type_names() -> list[str]:
    """Every installed step type's name, without importing any of them."""
    return sorted(_entry_points())


def get_step_type(name: str) -> StepType | None:
    """The step type `name`, its module imported when it is first asked for: a worker whose
    runs use only `set` and `http` steps never holds the SCIM or directory connectors (nor
    their libraries). A name no entry point has (unknown, or a plugin whose entry point is
    named otherwise than its type) is looked up among them all."""
    if name in _entry_points():
        step_type = _loaded(name)
        if step_type.name == name:
            return step_type
    return step_types().get(name)


@functools.cache
def _loaded(entry_name: str) -> StepType:
    """(Cached by entry point: a bounded set, unlike the names callers may ask for.)"""
    return load_entry(_entry_points()[entry_name])


def load_entry(entry: EntryPoint) -> StepType:
    """The step type an entry point holds, checked to be one."""
    step_type = entry.load()
    if not isinstance(step_type, StepType):
        raise TypeError(f"entry point {entry.name} in {ENTRY_POINT_GROUP} is not a StepType")
    return step_type


@functools.cache
def step_types() -> dict[str, StepType]:
    """Every installed step type by its name (each module imported): for the workflow schema
    and the docs, not for running a step (`get_step_type`)."""
    found: dict[str, StepType] = {}
    for name in _entry_points():
        step_type = _loaded(name)
        if step_type.name != name:
            log.warning(
                "steps.entry_point_misnamed",
                entry_point=name,
                step_type=step_type.name,
                next_action=f"name the entry point {step_type.name!r} in the plugin's "
                "package metadata: its steps load with every other type until then",
            )
        found[step_type.name] = step_type
    return found

"""Listeners other subsystems attach to run and step changes, without the engine knowing them.

Listeners run inside the engine's transaction, so what they write commits (or rolls back) with
the change that caused it. A run-status listener also declares which status changes concern it
(`wants`, over a `RunEnd` told without a query): a run's end, or a fresh run's start, that
concerns none is recorded on the engine's hot path, without the listeners. They are found
through the `grantflow.engine_listeners` entry point group (each entry point is a module that
calls `on_run_status` / `on_step_failure` on import).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from sqlalchemy.orm import Session

from grantflow.engine.models import Run, StepRun

# (session, run, old status, new status)
RunStatusListener = Callable[[Session, Run, str, str], None]
# (session, run, step run, failure reason, final: the step will not be retried)
StepFailureListener = Callable[[Session, Run, StepRun, dict[str, Any], bool], None]

# (session, queue, now): durable timers kept in the database (grant expiry, leave dates). A
# listener whose work comes in batches returns True while more is left: the worker calls it
# again at once, each batch in its own transaction (locks are held one batch at a time).
TickListener = Callable[[Session, Any, dt.datetime], bool | None]

# (session, run, step run, failure): a step exhausted its retries and escalated to a person
EscalationListener = Callable[[Session, Run, StepRun, dict[str, Any]], None]
# (session, run) -> facts about what a waiting run waits for (who, since when, until when)
WaitDescriber = Callable[[Session, Run], dict[str, Any] | None]


@dataclass(frozen=True)
class RunEnd:
    """What a run's end is, told without a query: what a run-status listener looks at to say
    whether it has anything to do (`on_run_status(wants=...)`). The engine asks the same of a
    fresh run's start (status `running`) before it takes the run on its fast path."""

    status: str  # the status the run moves to
    trigger: str
    created_by: str
    replay_of: str | None
    retry_count: int
    people: bool  # the plan has an approval or task step, or a step that escalates


_escalation: list[EscalationListener] = []
_describers: list[WaitDescriber] = []
_run_status: list[RunStatusListener] = []
_wants: dict[RunStatusListener, Callable[[RunEnd], bool]] = {}
_ticks: list[TickListener] = []
TIMERS = "timers"  # the lane of the timers that did not ask for one of their own
_lanes: dict[TickListener, str] = {}
_step_failure: list[StepFailureListener] = []
_loaded = False


def on_run_status(
    *, wants: Callable[[RunEnd], bool]
) -> Callable[[RunStatusListener], RunStatusListener]:
    """Register a listener, with what tells whether a run's status change concerns it (say
    exactly which statuses it acts on): a change that concerns no listener may be recorded
    without them (the engine's hot path: a run's start and its end)."""

    def register(listener: RunStatusListener) -> RunStatusListener:
        if listener not in _run_status:
            _run_status.append(listener)
            _wants[listener] = wants
        return listener

    return register


def run_end_concerns_a_listener(end: RunEnd) -> bool:
    load()
    return any(_wants[listener](end) for listener in _run_status)


def on_step_failure(listener: StepFailureListener) -> StepFailureListener:
    if listener not in _step_failure:
        _step_failure.append(listener)
    return listener


def on_tick(listener: TickListener) -> TickListener:
    if listener not in _ticks:
        _ticks.append(listener)
    return listener


def on_long_tick(lane: str) -> Callable[[TickListener], TickListener]:
    """Register a timer whose one transaction can take long (a report of a million rows:
    seconds): a worker runs it in a thread of its own, its `lane`, so that the other timers
    (grant expiry, leave dates) are not held behind it."""

    def register(listener: TickListener) -> TickListener:
        on_tick(listener)
        _lanes[listener] = lane
        return listener

    return register


def on_escalation(listener: EscalationListener) -> EscalationListener:
    if listener not in _escalation:
        _escalation.append(listener)
    return listener


def wait_describer(describer: WaitDescriber) -> WaitDescriber:
    if describer not in _describers:
        _describers.append(describer)
    return describer


def escalated(session: Session, run: Run, step_run: StepRun, failure: dict[str, Any]) -> None:
    load()
    for listener in _escalation:
        listener(session, run, step_run, failure)


def describe_wait(session: Session, run: Run) -> dict[str, Any] | None:
    load()
    for describer in _describers:
        found = describer(session, run)
        if found:
            return found
    return None


def tick_listeners(lane: str | None = None) -> list[TickListener]:
    """The timers of `lane` (TIMERS: the ones without a lane of their own), or every timer."""
    load()
    if lane is None:
        return list(_ticks)
    return [listener for listener in _ticks if _lanes.get(listener, TIMERS) == lane]


def tick_lanes() -> list[str]:
    """The lanes timers asked for besides TIMERS, each a thread of a worker's."""
    load()
    return sorted({_lanes[listener] for listener in _ticks if listener in _lanes})


def load() -> None:
    """Import every installed listener module once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in entry_points(group="grantflow.engine_listeners"):
        import_module(entry.value)


def run_status_changed(session: Session, run: Run, old: str, new: str) -> None:
    load()
    for listener in _run_status:
        listener(session, run, old, new)


def step_failed(
    session: Session, run: Run, step_run: StepRun, failure: dict[str, Any], final: bool
) -> None:
    load()
    for listener in _step_failure:
        listener(session, run, step_run, failure, final)

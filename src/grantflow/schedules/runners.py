"""Built-in governance jobs: what an occurrence of an access review, a control evaluation or
a report job does. Each kind registers a runner (config check + run) from its own module in
`grantflow.governance`, which is imported by name when a job of that kind first needs it (so
`schedules` never imports `governance`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from sqlalchemy.orm import Session

from grantflow.errors import ValidationError
from grantflow.queue.interface import Queue
from grantflow.schedules.models import Job, Occurrence


@dataclass(frozen=True)
class Result:
    result_type: str  # access_review | control_evaluation | report
    result_id: str
    # succeeded | failed (a control evaluation with failing controls "failed"); None: not yet
    # known (a large report the workers write sets it then)
    outcome: str | None


@dataclass(frozen=True)
class Runner:
    # raises ValidationError naming the field when the job's config is wrong
    check: Callable[[dict[str, Any]], None]
    run: Callable[[Session, Queue, Job, Occurrence], Result]


_RUNNERS: dict[str, Runner] = {}
_MODULES = {
    "access_review": "grantflow.governance.reviews",
    "control_evaluation": "grantflow.governance.controls",
    "report": "grantflow.governance.reports",
}


def register(kind: str, runner: Runner) -> None:
    _RUNNERS[kind] = runner


def runner_for(kind: str) -> Runner:
    if kind not in _RUNNERS and kind in _MODULES:
        import_module(_MODULES[kind])  # registers itself on import
    if kind not in _RUNNERS:
        raise ValidationError(
            f"kind: {kind!r} is not a built-in job", details=[{"field": "body.kind"}]
        )
    return _RUNNERS[kind]


def check_config(kind: str, config: dict[str, Any]) -> None:
    runner_for(kind).check(config)


def run(session: Session, queue: Queue, job: Job, occurrence: Occurrence) -> Result:
    return runner_for(job.kind).run(session, queue, job, occurrence)

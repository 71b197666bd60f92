"""The template context of a run: input, subject snapshots, and earlier steps' outputs."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from jinja2 import StrictUndefined
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from grantflow.engine.models import Run, StepRun
from grantflow.engine.states import StepStatus


def skipped_output(by: str, reason: str) -> dict[str, Any]:
    """The output of a step the run went on without: a person skipped it (a task, an
    escalated failure), a task's timeout did, or it failed with `on_failure: continue`.
    Templates test `steps.<id>.output.skipped`; any other field of it fails naming the skip."""
    return {"skipped": True, "skipped_by": by, "reason": reason}


class SkippedOutput(dict[str, Any]):
    """A skipped step's output as templates see it: `skipped`, `skipped_by` and `reason` read
    as usual (`{% if steps.x.output.skipped %}`); any other field is undefined with a message
    naming the skip, so the step reading it fails saying why the field is missing."""

    def __init__(self, step_id: str, output: dict[str, Any]) -> None:
        super().__init__(output)
        self._skipped_step = step_id

    def __missing__(self, key: Any) -> Any:
        return StrictUndefined(
            hint=f"steps.{self._skipped_step} was skipped by {self.get('skipped_by')} "
            f"({self.get('reason')}); its output has no field {key!r}"
        )


def _output(step_run: StepRun) -> Any:
    output = step_run.output
    said = output if isinstance(output, dict) and output.get("skipped") is True else None
    if step_run.status == StepStatus.SKIPPED:
        return SkippedOutput(step_run.step_id, said or skipped_output("a person", "skipped"))
    if step_run.status == StepStatus.FAILED and said is not None:  # on_failure: continue
        return SkippedOutput(step_run.step_id, said)
    return output


def step_entry(step_run: StepRun) -> dict[str, Any]:
    return {"output": _output(step_run), "status": step_run.status, "error": step_run.error}


def json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


class StepEntries(dict[str, Any]):
    """The context's `steps`, counting the JSON size of each output as it is added, so
    rendering holds the run context to its limit without measuring it at every step."""

    def __init__(self, base_bytes: int = 0) -> None:
        super().__init__()
        self.base_bytes = base_bytes  # input and subject
        self._sizes: dict[str, int] = {}

    @property
    def total_bytes(self) -> int:
        return self.base_bytes + sum(self._sizes.values())

    def __setitem__(self, step_id: str, entry: Any) -> None:
        output = entry.get("output") if isinstance(entry, dict) else entry
        self._sizes[step_id] = json_bytes(output) if output is not None else 0
        super().__setitem__(step_id, entry)


_IN_CONTEXT = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED)


def build_context(run: Run, step_runs: list[StepRun]) -> dict[str, Any]:
    steps = StepEntries(json_bytes(run.input or {}) + json_bytes(run.subject or {}))
    for step_run in step_runs:  # in sequence order: a later iteration replaces an earlier one
        if step_run.status in _IN_CONTEXT:
            steps[step_run.step_id] = step_entry(step_run)
    subject = run.subject or {}
    return {
        "input": run.input or {},
        "identity": subject.get("identity", {}),
        "grant": subject.get("grant", {}),
        "application": subject.get("application", {}),
        "steps": steps,
        "run": {
            "id": run.id,
            "workflow_id": run.workflow_id,
            "version": run.version,
            "trigger": run.trigger,
        },
    }


def load_progress(session: Session, run: Run) -> tuple[StepRun, dict[str, Any], Counter[str]]:
    """The run's current step run, its template context and its passes per step id, as
    `build_context` over every step run would give them — but loading only each step's last
    step run in the context (and the current one), with the counts from one aggregate: a run
    that loops holds thousands of step runs, and a turn that resumes it (a poll's timer) built
    them all as objects again. (The aggregate still walks the run's rows on the server: about
    a millisecond per 5,000.)"""
    in_context = case((StepRun.status.in_(_IN_CONTEXT), StepRun.sequence))
    steps = session.execute(
        select(
            StepRun.step_id,
            func.count(),
            func.max(StepRun.sequence),
            func.max(in_context),  # its output in the context: its last such pass
            func.min(in_context),  # where the context lists it: its first such pass
        )
        .where(StepRun.run_id == run.id)
        .group_by(StepRun.step_id)
    ).all()
    current = max(steps, key=lambda row: row[2])
    wanted = {(row[0], row[3]) for row in steps if row[3] is not None}
    wanted.add((current[0], current[2]))
    loaded = {
        (s.step_id, s.sequence): s
        for s in session.execute(
            select(StepRun).where(
                StepRun.run_id == run.id, StepRun.sequence.in_({seq for _, seq in wanted})
            )
        ).scalars()
        if (s.step_id, s.sequence) in wanted
    }
    listed = sorted((row for row in steps if row[3] is not None), key=lambda row: row[4])
    context = build_context(run, [loaded[(row[0], row[3])] for row in listed])
    passes = Counter({str(row[0]): int(row[1]) for row in steps})
    return loaded[(current[0], current[2])], context, passes

"""Loading the plan a run executes, integrity-checked. Parsed plans are cached by their stored
text (read as text where it can be: one key per plan for a worker's every path), so a plan
that was altered in the database is checked again, never served stale."""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.definitions.plan import Plan, load_plan
from grantflow.errors import InternalError


@functools.lru_cache(maxsize=1024)
def _parsed(name: str, version: int, text: str) -> Plan:
    return load_plan(json.loads(text), workflow=name, version=version)


def plan_for(session: Session, workflow_id: str, version: int) -> Plan:
    row = session.execute(
        select(cast(WorkflowVersion.plan, Text), Workflow.name)
        .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
        .where(WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.number == version)
    ).one_or_none()
    return plan_of_text(workflow_id, row[1] if row else "?", version, row[0] if row else None)


def plan_of(workflow_id: str, name: str, version: int, stored: Any) -> Plan:
    """The plan from a version's stored `plan` column (read by the caller), integrity-checked."""
    text = None if stored is None else json.dumps(stored, sort_keys=True)
    return plan_of_text(workflow_id, name, version, text)


def plan_of_text(workflow_id: str, name: str, version: int, text: str | None) -> Plan:
    """The same from the column read as its text (`plan::text`), the cache key as it is: a
    plan this process parsed before costs no parsing."""
    if text is None or text == "null":  # (a plan set to None through the ORM: JSON null)
        raise InternalError(
            f"version {version} of workflow {workflow_id} has no compiled plan",
            code="plan_integrity_failed",
            next_action="Recompile the version's plan from its document, then Retry the run",
        )
    return _parsed(name, version, text)

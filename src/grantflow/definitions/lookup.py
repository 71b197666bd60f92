"""Finding a workflow by id, unique id prefix or name. Apart from `definitions.workflows` (which
re-exports these) so that what only looks a workflow up — a worker tripping a breaker, a spend
cap — does not load the publishing machinery: the gate, YAML, JSON Schema, cron."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.definitions.models import Workflow
from grantflow.errors import NotFound
from grantflow.store.ids import by_prefix
from grantflow.store.names import name_key


def get_workflow(session: Session, workflow_id: str) -> Workflow:
    workflow = session.get(Workflow, workflow_id) or by_prefix(
        session, Workflow, workflow_id, "workflow"
    )
    if workflow is None:
        raise NotFound(f"workflow {workflow_id} does not exist", target_type="workflow")
    return workflow


def find_workflow(session: Session, id_or_name: str) -> Workflow:
    workflow = (
        session.get(Workflow, id_or_name)
        or session.execute(
            select(Workflow).where(Workflow.name_key == name_key(id_or_name))
        ).scalar_one_or_none()
        or by_prefix(session, Workflow, id_or_name, "workflow", named=True)
    )
    if workflow is None:
        raise NotFound(f"no workflow with id or name {id_or_name!r}", target_type="workflow")
    return workflow

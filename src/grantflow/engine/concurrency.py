"""A workflow's concurrency limit (settings.max_concurrent_runs, else
GRANTFLOW_MAX_CONCURRENT_RUNS_PER_WORKFLOW): how many of its runs may be `running` at once.

Counting the running runs and starting one must not interleave with another start of the same
workflow, or two starts each count the other's run as not yet running and both go. On
PostgreSQL every start therefore takes the workflow's transaction-level advisory lock and then
counts in a snapshot taken after it: the function `workflow_start_count` (migration 0018) does
both inside the statement that calls it, so it sees every start that held the lock before,
even one committed after the calling statement began. (On SQLite the single writer lock
already orders them.)"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus
from grantflow.safety.limits import limits
from grantflow.store.database import Database


def lock_key(workflow_id: str) -> str:
    return f"grantflow.workflow-starts:{workflow_id}"


def allowed(max_concurrent_runs: int | None) -> int:
    """The limit: the workflow's own, else the deployment's."""
    return max_concurrent_runs or limits().max_concurrent_runs_per_workflow


def over_limit(database: Database, session: Session, run: Run, limit: int) -> bool:
    """True when `limit` other runs of the workflow are running: the run stays queued. On
    PostgreSQL, holds the workflow's start lock until the caller's transaction ends."""
    if database.dialect == "postgresql":
        count = func.workflow_start_count(lock_key(run.workflow_id), run.workflow_id, run.id)
        busy = session.execute(select(count)).scalar_one()
    else:
        busy = session.execute(
            select(func.count())
            .select_from(Run)
            .where(
                Run.workflow_id == run.workflow_id,
                Run.id != run.id,
                Run.status == RunStatus.RUNNING,
            )
        ).scalar_one()
    return bool(busy >= limit)

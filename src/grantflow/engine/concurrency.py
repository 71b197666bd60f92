"""A workflow's concurrency limit (settings.max_concurrent_runs, else
GRANTFLOW_MAX_CONCURRENT_RUNS_PER_WORKFLOW): how many of its runs may be `running` at once.

Counting the running runs and starting one must not interleave with another start of the same
workflow, or two starts each count the other's run as not yet running and both go. On
PostgreSQL every start therefore takes the workflow's transaction-level advisory lock first,
in a statement of its own: the count that follows, in a new snapshot, sees every start that
held the lock before. (On SQLite the single writer lock already orders them.)"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus
from grantflow.safety.limits import limits
from grantflow.store.database import Database

# in the driver's own SQL (engine/take.py sends it pipelined before the take); the lock
# `Database.lock` takes
LOCK = "SELECT pg_advisory_xact_lock(hashtext(%(lock_key)s))"


def lock_key(workflow_id: str) -> str:
    return f"grantflow.workflow-starts:{workflow_id}"


def allowed(max_concurrent_runs: int | None) -> int:
    """The limit: the workflow's own, else the deployment's."""
    return max_concurrent_runs or limits().max_concurrent_runs_per_workflow


def over_limit(database: Database, session: Session, run: Run, limit: int) -> bool:
    """True when `limit` other runs of the workflow are running: the run stays queued. Holds the
    workflow's start lock until the caller's transaction ends."""
    database.lock(session, lock_key(run.workflow_id))
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

"""Work to do once a transaction has committed: wake workers, announce runs, take a lease.

SQLAlchemy's own `after_commit` event also fires when a savepoint is released, and its
`after_rollback` when one is rolled back, so a listener registered with `once=True` ran too
early (before the outer COMMIT: a worker told of a run it cannot see yet) or was dropped with
a savepoint that had nothing to do with it. Here an action runs after the outermost COMMIT
only, and is dropped with the savepoint it was registered in, or with the transaction.

Actions registered under the same callable are run once, with every item given to them in
the transaction that survived (the runs to announce, in one call). The other way round,
`on_rollback` undoes what a transaction kept in memory beside its rows (a count of the runs it
started) when the savepoint it was done in rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = structlog.get_logger(__name__)

Action = Callable[[list[Any]], object]

_PENDING = "grantflow.after_commit"
_UNDO = "grantflow.undo_on_rollback"
# each savepoint begun while undos stood: how many did (its own are those after them)
_MARKS = "grantflow.undo_marks"
_ENDED = "grantflow.undo_marks_ended"  # savepoints ended whose marks are yet to go


def after_commit(session: Session, action: Action, *items: Hashable) -> None:
    """Call `action(items)` once this session's transaction commits, unless the savepoint
    current now (or the transaction) rolls back first. `items` from every registration of the
    same `action` that stands are passed together, in order; `action([])` if none were given."""
    pending: list[tuple[SessionTransaction | None, Action, tuple[Hashable, ...]]]
    pending = session.info.setdefault(_PENDING, [])
    pending.append((session.get_nested_transaction(), action, items))


def on_rollback(session: Session, undo: Callable[[], object]) -> None:
    """Call `undo()` if the savepoint current now (or one around it, or the transaction) rolls
    back; forgotten once the transaction commits. (A rollback undoes what was registered since
    its savepoint began: no walk over the others, however many a transaction holds.)"""
    _forget_ended(session)
    session.info.setdefault(_UNDO, []).append(undo)


def _committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # (a savepoint released: its actions wait for the COMMIT, its undos stand)
    session.info.pop(_UNDO, None)
    session.info.pop(_MARKS, None)
    session.info.pop(_ENDED, None)
    if _PENDING not in session.info:
        return
    grouped: dict[Action, list[Any]] = {}
    for _, action, items in session.info.pop(_PENDING, []):
        grouped.setdefault(action, []).extend(items)
    for action, items in grouped.items():
        try:
            action(items)
        except Exception:  # the transaction is committed: an action's failure must not undo that
            log.exception("store.after_commit_failed", action=getattr(action, "__qualname__", ""))


def _rolled_back(session: Session, rolled_back: SessionTransaction) -> None:
    if _PENDING not in session.info and _UNDO not in session.info:
        return
    boundary: SessionTransaction | None = rolled_back  # what the database rolled back
    while boundary is not None and not boundary.nested:
        boundary = boundary.parent
    undos = session.info.get(_UNDO)
    if undos:  # (those registered since the savepoint began: its own and its children's)
        start = 0 if boundary is None else session.info.get(_MARKS, {}).get(boundary, 0)
        undone = undos[start:]
        del undos[start:]
        for undo in reversed(undone):
            undo()
    _forget_ended(session)
    if boundary is None:  # the whole transaction
        session.info.pop(_PENDING, None)
        return
    pending = session.info.get(_PENDING)
    if pending:
        pending[:] = [entry for entry in pending if not _within(entry[0], boundary)]


def _within(savepoint: SessionTransaction | None, boundary: SessionTransaction) -> bool:
    while savepoint is not None:
        if savepoint is boundary:
            return True
        savepoint = savepoint.parent
    return False


def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested and transaction in session.info.get(_MARKS, ()):
        # (its mark goes once its rollback, which SQLAlchemy tells after this, has used it)
        session.info.setdefault(_ENDED, []).append(transaction)
    if transaction.parent is None:  # closed without a COMMIT (or after one): nothing carries over
        session.info.pop(_PENDING, None)
        session.info.pop(_MARKS, None)
        session.info.pop(_ENDED, None)
        # (a COMMIT took the undos away: any left belong to a transaction rolled back)
        for undo in reversed(session.info.pop(_UNDO, [])):
            undo()


def _forget_ended(session: Session) -> None:
    """The marks of savepoints that ended (released, or rolled back and used): a transaction
    of ten thousand savepoints keeps none of them."""
    ended = session.info.pop(_ENDED, None)
    marks = session.info.get(_MARKS)
    if ended and marks:
        for transaction in ended:
            marks.pop(transaction, None)


def _begun(session: Session, transaction: SessionTransaction) -> None:
    _forget_ended(session)
    if transaction.nested and session.info.get(_UNDO):
        session.info.setdefault(_MARKS, {})[transaction] = len(session.info[_UNDO])


# (on the class, once: a listener per session would cost each transaction more than it does)
event.listen(Session, "after_commit", _committed)
event.listen(Session, "after_soft_rollback", _rolled_back)
event.listen(Session, "after_transaction_end", _ended)
event.listen(Session, "after_transaction_create", _begun)

"""Work done once a transaction commits (store/after_commit.py): after the outermost COMMIT
only, never when a savepoint is released, and dropped with the savepoint it was registered in."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, SessionTransaction, mapped_column

from grantflow.store.after_commit import after_commit, on_rollback
from grantflow.store.database import Database


class Probes(DeclarativeBase):
    pass


class Probe(Probes):
    """A table of this test's own, to clash on."""

    __tablename__ = "after_commit_probes"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)


class Told:
    def __init__(self) -> None:
        self.calls: list[list[object]] = []

    def __call__(self, items: list[object]) -> None:
        self.calls.append(items)


def _fail_in(transaction: SessionTransaction, work: Callable[[], None]) -> None:
    """Do `work` in `transaction`, then fail: the transaction rolls back."""
    with transaction:
        work()
        raise RuntimeError("boom")


def test_a_savepoint_rolled_back_drops_only_its_own_items(database: Database) -> None:
    told = Told()
    with database.transaction() as session:
        after_commit(session, told, "outer")
        with session.begin_nested() as kept:
            after_commit(session, told, "released")
            with session.begin_nested() as inner:
                after_commit(session, told, "inner, released")
                inner.commit()
            kept.commit()
        assert told.calls == []  # a savepoint's release is not the COMMIT
        rolled = session.begin_nested()
        after_commit(session, told, "rolled back")
        with session.begin_nested():
            after_commit(session, told, "inside the rolled back")
        rolled.rollback()
        after_commit(session, told, "after")
        assert told.calls == []
    assert told.calls == [["outer", "released", "inner, released", "after"]]


def test_an_error_in_a_savepoint_drops_its_items_and_keeps_the_rest(
    database: Database,
) -> None:
    told = Told()
    with database.transaction() as session:
        after_commit(session, told, "kept")
        with pytest.raises(RuntimeError, match="boom"):
            _fail_in(session.begin_nested(), lambda: after_commit(session, told, "dropped"))
    assert told.calls == [["kept"]]


def test_a_clash_flushed_in_a_savepoint_drops_only_that_savepoints_items(
    database: Database,
) -> None:
    """A unique violation inside a savepoint rolls back that savepoint, not the transaction
    (the flush's own subtransaction is not where the rollback stops)."""
    Probes.metadata.create_all(database.engine)
    with database.transaction() as session:
        session.add(Probe(id="taken"))
    told = Told()

    def clash(session: Session) -> None:
        with session.begin_nested():
            after_commit(session, told, "dropped")
            session.add(Probe(id="taken"))
            session.flush()

    with database.transaction() as session:
        after_commit(session, told, "kept")
        with pytest.raises(IntegrityError):
            clash(session)
        after_commit(session, told, "after")
    assert told.calls == [["kept", "after"]]


def test_a_session_closed_without_a_commit_keeps_nothing(database: Database) -> None:
    told = Told()
    session = database.sessions()
    session.begin()
    session.begin_nested()
    after_commit(session, told, "lost")
    session.close()
    with session.begin():
        after_commit(session, told, "next")
    session.close()
    assert told.calls == [["next"]]


def test_nothing_runs_when_the_transaction_rolls_back_nor_carries_over(database: Database) -> None:
    told = Told()
    with database.sessions() as session:
        with pytest.raises(RuntimeError, match="boom"):
            _fail_in(session.begin(), lambda: after_commit(session, told, "lost"))
        with session.begin():  # the same session's next transaction: nothing of the last one
            after_commit(session, told, "next")
    assert told.calls == [["next"]]


def test_each_action_runs_once_and_one_failing_does_not_stop_the_others(
    database: Database,
) -> None:
    first, second = Told(), Told()

    def broken(_items: list[object]) -> None:
        raise RuntimeError("an action failed")

    with database.transaction() as session:
        after_commit(session, first)
        after_commit(session, broken)
        after_commit(session, first)  # the same action: one call
        after_commit(session, second, 1, 2)
    assert first.calls == [[]]
    assert second.calls == [[1, 2]]


def test_what_a_rolled_back_savepoint_did_in_memory_is_undone_and_nothing_else(
    database: Database,
) -> None:
    """`on_rollback`: undone with the savepoint it was done in (or one around it), in reverse
    order; not when a savepoint is released or the transaction commits."""
    undone: list[str] = []
    with database.transaction() as session:
        on_rollback(session, lambda: undone.append("outer"))
        with session.begin_nested() as kept:
            on_rollback(session, lambda: undone.append("released"))
            kept.commit()
        rolled = session.begin_nested()
        on_rollback(session, lambda: undone.append("rolled back"))
        with session.begin_nested():
            on_rollback(session, lambda: undone.append("inside, released"))
        rolled.rollback()
        assert undone == ["inside, released", "rolled back"]
    assert undone == ["inside, released", "rolled back"]  # (the COMMIT undoes nothing)
    with database.sessions() as session, pytest.raises(RuntimeError, match="boom"):
        _fail_in(session.begin(), lambda: on_rollback(session, lambda: undone.append("whole")))
    assert undone[-1] == "whole"

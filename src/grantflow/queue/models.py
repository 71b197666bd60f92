"""The database transport's table: one row per run that a worker should advance."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from grantflow.store.base import Base, UTCDateTime, utcnow


class QueueItem(Base):
    __tablename__ = "queue_items"
    __table_args__ = (Index("ix_queue_items_available", "available_at"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    available_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # durable timers: future
    enqueued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)


class Worker(Base):
    """A worker process, for queue introspection: registered at start, renewed by each
    heartbeat, removed at a clean stop; one that died stays, shown lost, for a day."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(20), default="database")  # "redis": Valkey
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # live until then: the last heartbeat plus the worker's lease (NULL: a worker from before
    # this column, live for a minute after its heartbeat)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

"""What the benchmark scripts share: a PostgreSQL database of their own, the API served in this
process, an admin's token, a count of the statements psycopg sends, by thread, and what a
durable write costs on the machine (the floor of a step boundary)."""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import psycopg
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from grantflow.api import create_app
from grantflow.auth import sessions
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import create_user, find_user_by_email
from grantflow.config import load_settings
from grantflow.console.cookies import SESSION
from grantflow.store import migrate
from grantflow.store.database import Database, open_database

ACTOR = Actor.system("bench")
# The PostgreSQL server a script makes its database on (as its administrator).
ADMIN_URL = os.environ.get(
    "GRANTFLOW_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# One master key for everything a script starts (the API here, worker processes), as in a real
# deployment: they share the audit chain and the credentials.
MASTER_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


T = TypeVar("T")


def log(message: str) -> None:
    """Progress, on stderr: stdout carries only the script's JSON."""
    print(message, file=sys.stderr, flush=True)


class Unreachable(Exception):
    """The database server could not be reached: its rows are left out."""


@contextlib.contextmanager
def postgres_database(admin: URL) -> Iterator[Database]:
    """A migrated database of this script's own on the server `admin` reaches; dropped after."""
    name = f"grantflow_bench_{uuid.uuid4().hex[:10]}"
    # (`flush_every_step` is for the benchmark's database, read by Grantflow: the driver refuses
    # it)
    engine = create_engine(
        admin.difference_update_query(["flush_every_step"]), isolation_level="AUTOCOMMIT"
    )
    try:
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except OperationalError as exc:
            raise Unreachable(str(exc.orig).splitlines()[0]) from exc
        db = open_database(admin.set(database=name))
        db.use_master_keys(lambda: [base64.urlsafe_b64decode(MASTER_KEY)])  # the workers' key
        try:
            migrate.upgrade(db)
            yield db
        finally:
            db.dispose()
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@contextlib.contextmanager
def served(db: Database) -> Iterator[str]:
    """The API under uvicorn on a free port of 127.0.0.1, in a thread of this process."""
    settings = load_settings(
        database_url=db.url.render_as_string(hide_password=False),
        secret_key=MASTER_KEY,
        secret_key_file="/nonexistent/grantflow-bench.key",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, db),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def console_client(db: Database, url: str, email: str, role: Role) -> httpx.Client:
    """A user of `role` signed in to the console: a session made directly, its cookie on the
    client (the user is made unless it exists)."""
    settings = load_settings(
        database_url=db.url.render_as_string(hide_password=False),
        secret_key=MASTER_KEY,
        secret_key_file="/nonexistent/grantflow-bench.key",
    )
    with db.transaction() as session:
        user = find_user_by_email(session, email) or create_user(
            session, ACTOR, email=email, roles=[role]
        )
        _, raw = sessions.start_session(
            session,
            user,
            sessions.SessionPolicy.of(settings),
            method="password",
            user_agent="bench",
            address="127.0.0.1",
        )
    return httpx.Client(base_url=url, cookies={SESSION: raw}, timeout=120)


def timed_reads(client: httpx.Client, path: str, requests: int) -> dict[str, Any]:
    """GET `path` `requests` times (after a warm-up the caller made): the median ms and the
    answer's size in KiB."""
    times, size = [], 0
    for _ in range(requests):
        t0 = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        answer.raise_for_status()
        size = len(answer.content)
    return {"p50_ms": round(statistics.median(times), 1), "kib": round(size / 1024, 1)}


def percentiles(
    call: Callable[[], T], requests: int, warmups: int = 3
) -> tuple[dict[str, float], T]:
    """`call` made `warmups` times, then `requests` times timed: p50 and p95 in ms, and what
    the last call returned."""
    for _ in range(warmups):
        call()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        last = call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    figures = {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
    }
    return figures, last


def bulk_identities(db: Database, people: int) -> None:
    """`people` identities written in one statement: person<n>@example.com, userName
    Person<n>."""
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO identities (id, email, user_name, display_name, lifecycle_state, "
                "active, attributes, scim, source, version, created_at, updated_at) "
                "SELECT md5(g::text)::uuid::text, 'person' || g || '@example.com', "
                "'Person' || g, 'Person ' || g, 'active', true, '{}', '{}', 'api', 1, now(), "
                "now() FROM generate_series(0, :last) AS g"
            ),
            {"last": people - 1},
        )
        conn.execute(text("ANALYZE identities"))


def admin_token(db: Database, email: str = "bench@example.com") -> str:
    with db.transaction() as session:
        user = create_user(session, ACTOR, email=email, roles=[Role.ADMIN])
        _, raw = create_token(session, ACTOR, user_id=user.id, name="bench", ttl_days=1)
    return raw


class StatementCounter:
    """Every statement psycopg sends from this process, by the thread that sent it, while
    counting is on (psycopg's cursor methods wrapped: SQLAlchemy's own events miss what the
    engine sends on raw connections, such as its checkpoints and the queue's claim)."""

    def __init__(self) -> None:
        self.by_thread: collections.Counter[str] = collections.Counter()
        self.on = False
        self._lock = threading.Lock()
        self._originals: dict[str, Any] = {}

    def __enter__(self) -> StatementCounter:
        counter = self
        for name in ("execute", "executemany"):
            original = getattr(psycopg.Cursor, name)
            self._originals[name] = original

            def counted(cursor: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                if counter.on:
                    with counter._lock:
                        counter.by_thread[threading.current_thread().name] += 1
                return _original(cursor, *args, **kwargs)

            setattr(psycopg.Cursor, name, counted)
        return self

    def __exit__(self, *_exc: object) -> None:
        for name, original in self._originals.items():
            setattr(psycopg.Cursor, name, original)

    @contextlib.contextmanager
    def counting(self) -> Iterator[collections.Counter[str]]:
        with self._lock:
            self.by_thread.clear()
        self.on = True
        try:
            yield self.by_thread
        finally:
            self.on = False


def commit_floor(db: Database, samples: int = 300) -> dict[str, float]:
    """What one durable write costs on this machine, whatever writes it: `samples` one-row
    INSERTs, each its own transaction, sent one after another on one connection (psycopg,
    autocommit) to a scratch table; p50/p99 in ms. Each waits for its commit's WAL flush, as
    every step boundary that a call or the run's end follows does (a pure step's success does
    not wait: engine/checkpoint.py). round_trip_p50_ms: `SELECT 1`, no flush."""
    url = db.url.set(drivername="postgresql")
    params = url.translate_connect_args(username="user", database="dbname")
    with psycopg.connect(autocommit=True, **params) as conn:
        conn.execute("CREATE TABLE bench_commit_floor (id bigserial PRIMARY KEY, at timestamptz)")
        try:
            inserts, selects = [], []
            for _ in range(samples):
                started = time.perf_counter()
                conn.execute("INSERT INTO bench_commit_floor (at) VALUES (now())")
                inserts.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                conn.execute("SELECT 1")
                selects.append((time.perf_counter() - started) * 1000)
        finally:
            conn.execute("DROP TABLE bench_commit_floor")
    inserts.sort()
    return {
        "commit_p50_ms": round(inserts[len(inserts) // 2], 3),
        "commit_p99_ms": round(inserts[int(len(inserts) * 0.99)], 3),
        "round_trip_p50_ms": round(sorted(selects)[len(selects) // 2], 3),
    }


def wal_position(db: Database) -> int:
    """The server's WAL insert position, in bytes (the difference of two: WAL written)."""
    with db.engine.connect() as conn:
        lsn = conn.execute(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).scalar_one()
    return int(lsn)

"""One database class; SQLite and PostgreSQL differ only in the small hooks they override."""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from grantflow.errors import ServiceUnavailable
from grantflow.store.after_commit import after_commit

if TYPE_CHECKING:
    import sqlite3  # (the driver loads with SQLAlchemy's SQLite dialect, only on SQLite)


class Database:
    """An engine, a session factory, and the storage hooks the services rely on."""

    dialect = "generic"

    def __init__(self, url: URL, **engine_options: Any) -> None:
        self.url = url
        # (hide_parameters: an error's text — logged, shown — names its statement, never the
        # values sent with it, which hold rows' data)
        self.engine: Engine = create_engine(
            self.driver_url(), hide_parameters=True, **self.engine_options(), **engine_options
        )
        self._install_hooks(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Set when work is enqueued in this process (after commit), so workers wake at once.
        self.queue_wakeup = threading.Event()
        # a NOTIFY's payload: the listener skips its own, whose wake-up was in-process already
        self.origin = uuid.uuid4().hex
        self._master_keys: Callable[[], list[bytes]] | None = None

    # --- keys ----------------------------------------------------------------------------------
    def use_master_keys(self, load: Callable[[], list[bytes]]) -> None:
        """Where the master key material comes from (current first): the audit chain is keyed
        with keys derived from it. Set by whoever opens the database with settings."""
        self._master_keys = load

    def master_keys(self) -> list[bytes]:
        """The master keys given by `use_master_keys`, else those the environment configures."""
        if self._master_keys is None:
            from grantflow.config import load_settings, master_keys

            settings = load_settings()
            self._master_keys = lambda: master_keys(settings)
        return self._master_keys()

    # --- hooks -------------------------------------------------------------------------------
    def engine_options(self) -> dict[str, Any]:
        return {}

    def driver_url(self) -> URL:
        """The URL the driver connects with: without Grantflow's own options."""
        return self.url

    # Must every step boundary's commit wait for the WAL's flush (engine/checkpoint.py)?
    flush_every_step = True
    # Seconds a timer's batches pause between them (engine/worker.py): room for the writers
    # that waited on one batch to get in before the next.
    pause_between_batches = 0.0

    def _install_hooks(self, engine: Engine) -> None:
        """Per-connection setup (pragmas, session settings)."""

    def _configure_driver(self, engine: Engine) -> None:
        """Driver settings every engine of this database needs (the autocommit one too)."""

    def lock_audit_chain(self, session: Session) -> None:
        """Serialise audit appends so the hash chain stays linear."""
        self.lock(session, "audit-chain")

    def missing_audit_triggers(self, session: Session) -> list[str]:
        """The triggers that keep audit_entries append-only which are missing, disabled or no
        longer refuse (each named, with why); empty when all are in place."""
        return []

    def lock(self, session: Session, name: str) -> None:
        """A lock named `name`, held until the transaction ends. SQLite: the write lock that
        BEGIN IMMEDIATE already took serialises every writer."""

    def is_unique_violation(self, exc: IntegrityError) -> bool:
        return "unique" in str(exc.orig).lower()

    def unique_violation_column(self, exc: IntegrityError) -> str | None:
        """The column a unique violation is about, when the driver says (else None)."""
        return None

    def notify_queue(self, session: Session) -> None:
        """Wake workers once this transaction commits (in this process; PostgreSQL: all)."""
        self.wake_after_commit(session)

    def wake_after_commit(self, session: Session) -> None:
        """Wake this process's workers once this transaction commits."""
        after_commit(session, self._wake)

    def _wake(self, _items: object) -> None:
        self.queue_wakeup.set()

    def listen_queue(self, wakeup: threading.Event, stop: threading.Event) -> None:
        """Block, setting `wakeup` on each notification from another process, until `stop`."""
        stop.wait()

    # --- use -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self.sessions() as session, session.begin():
            session.info["database"] = self
            yield session

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A transaction whose reads all see the same moment, for a page that counts rows and
        lists some of them (a moving run's history): they agree. SQLite's transactions do
        already; PostgreSQL: REPEATABLE READ."""
        with self.transaction() as session:
            yield session

    @contextlib.contextmanager
    def reads(self) -> Iterator[Session]:
        """A session for work that needs no transaction of its own: a few reads, perhaps one
        small write that stands alone (a token's last use). SQLite: `transaction`. PostgreSQL:
        in autocommit, which spares the BEGIN and COMMIT round trips."""
        with self.transaction() as session:
            yield session

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (OperationalError, DBAPIError) as exc:
            raise ServiceUnavailable(
                f"database unreachable: {type(exc.orig or exc).__name__}",
                next_action="check that the database named by GRANTFLOW_DATABASE_URL is running",
            ) from exc

    @functools.cached_property
    def autocommit(self) -> Engine:
        """Connections that stay in autocommit, for one-statement writes (the engine's
        checkpoints, queue claims on PostgreSQL): no per-checkout switch of isolation level."""
        # No rollback when a connection goes back to the pool: in autocommit no transaction is
        # left open to end (on the hot path: a few per cent of a worker's Python per step).
        engine = create_engine(
            self.driver_url(),
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,
            hide_parameters=True,
            **self.engine_options(),
        )
        self._configure_driver(engine)
        _share_disconnects(self.engine, engine)
        return engine

    def connection_lost(self, connection: Any, error: BaseException) -> None:
        """The server was gone for `connection` (of `autocommit`), met outside SQLAlchemy's
        execution (store/native.py): as SQLAlchemy does, it and every connection opened before
        now are replaced at their next checkout, in both pools (`_share_disconnects`)."""
        self.autocommit.pool._invalidate(connection, error)
        self.engine.pool._invalidate(None)  # type: ignore[arg-type]

    def dispose(self) -> None:
        if "autocommit" in self.__dict__:
            self.autocommit.dispose()
        self.engine.dispose()


class SqliteDatabase(Database):
    """The embedded default: WAL, foreign keys, and write transactions that take the lock early."""

    dialect = "sqlite"
    # (a waiting writer retries at steps of up to 100 ms: back-to-back batches starve it)
    pause_between_batches = 0.15

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}

    def _install_hooks(self, engine: Engine) -> None:
        database = self.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit BEGIN is deferred).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # SQLite's lower() folds ASCII only; reports sort names as PostgreSQL's does
            dbapi_conn.create_function("grantflow_lower", 1, _lower, deterministic=True)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # IMMEDIATE: a transaction that will write takes the write lock at BEGIN, so two
            # writers queue on busy_timeout instead of one failing with "database is locked".
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def is_unique_violation(self, exc: IntegrityError) -> bool:
        return "UNIQUE constraint failed" in str(exc.orig)

    def unique_violation_column(self, exc: IntegrityError) -> str | None:
        # "UNIQUE constraint failed: identities.user_name" (the last column of a composite key)
        found = re.search(r"UNIQUE constraint failed: \S+\.(\w+)\s*$", str(exc.orig))
        return found[1] if found else None

    def missing_audit_triggers(self, session: Session) -> list[str]:
        rows = session.execute(
            text(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'trigger' AND tbl_name = 'audit_entries'"
            )
        )
        found: dict[str, str | None] = {str(row[0]): row[1] for row in rows}
        missing = []
        for name in ("audit_entries_no_update", "audit_entries_no_delete"):
            if name not in found:
                missing.append(f"{name} (missing)")
            elif "RAISE(ABORT" not in (found[name] or "").upper().replace(" ", ""):
                missing.append(f"{name} (no longer refuses)")
        return missing


class PostgresDatabase(Database):
    """The production database, through psycopg 3."""

    dialect = "postgresql"

    def __init__(self, url: URL, **engine_options: Any) -> None:
        from grantflow.config import flush_every_step

        # `?flush_every_step=true`: a pure step's success waits for the flush too (a bad
        # value is refused here, not at a run's first step)
        self.flush_every_step = flush_every_step(str(url.query.get("flush_every_step", "false")))
        super().__init__(url, **engine_options)

    def driver_url(self) -> URL:
        return self.url.difference_update_query(["flush_every_step"])

    def engine_options(self) -> dict[str, Any]:
        import psycopg

        options: dict[str, Any] = {"pool_pre_ping": False, "pool_size": 10, "max_overflow": 20}
        # Statements go out with PostgreSQL's own placeholders ($1, $2, ...), which the
        # driver's raw cursors send as they are. With the driver's `%(name)s` ones, psycopg
        # parses every statement over 4 KB or 50 parameters again at each execution (a run's
        # creation, the ORM's reads of wide rows): a sixth of a run start's CPU. So SQL sent
        # to the driver on these engines (`exec_driver_sql`) is PostgreSQL's own: `$1`
        # placeholders with a sequence of parameters, a `%` as itself (store/native.py).
        options["paramstyle"] = "numeric_dollar"
        connect_args: dict[str, Any] = {"cursor_factory": psycopg.RawCursor}
        threshold = self.url.query.get("prepare_threshold")
        if threshold is not None:  # (the URL's text, as the number or None psycopg wants)
            from grantflow.config import prepare_threshold

            connect_args["prepare_threshold"] = prepare_threshold(str(threshold))
        options["connect_args"] = connect_args
        return options

    def _install_hooks(self, engine: Engine) -> None:
        self._configure_driver(engine)

    def _configure_driver(self, engine: Engine) -> None:
        import psycopg

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # (results read in batches: the same placeholders as every other statement)
            dbapi_conn.server_cursor_factory = psycopg.RawServerCursor

    def notify_queue(self, session: Session) -> None:
        super().notify_queue(session)
        notify = text("SELECT pg_notify('grantflow_queue', :origin)")
        session.execute(notify, {"origin": self.origin})

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Session]:
        with self.transaction() as session:
            # (set before the transaction's first statement; the pool resets it on return)
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @contextlib.contextmanager
    def reads(self) -> Iterator[Session]:
        with self._autocommit_sessions() as session, session.begin():
            session.info["database"] = self
            yield session

    @functools.cached_property
    def _autocommit_sessions(self) -> sessionmaker[Session]:
        return sessionmaker(self.autocommit, expire_on_commit=False)

    def listen_queue(self, wakeup: threading.Event, stop: threading.Event) -> None:
        import psycopg  # (here: a process on SQLite never loads the driver)

        params = self.url.translate_connect_args(username="user", database="dbname")
        with psycopg.connect(autocommit=True, **params) as conn:
            conn.execute("LISTEN grantflow_queue")
            # what was announced before this connection listened (at start, or while it
            # reconnected) is ready in the queue already: look once now instead of at the
            # next poll
            wakeup.set()
            while not stop.is_set():
                for notice in conn.notifies(timeout=1.0, stop_after=1):
                    if notice.payload != self.origin:
                        wakeup.set()

    def lock(self, session: Session, name: str) -> None:
        # A transaction-scoped advisory lock: released at commit or rollback.
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})

    def is_unique_violation(self, exc: IntegrityError) -> bool:
        return getattr(exc.orig, "sqlstate", None) == "23505"

    def unique_violation_column(self, exc: IntegrityError) -> str | None:
        # "Key (user_name)=(ada) already exists." (the last column of a composite key)
        diag = getattr(exc.orig, "diag", None)
        found = re.search(r"Key \((?:[^)]*, )?(\w+)\)=", getattr(diag, "message_detail", "") or "")
        return found[1] if found else None

    def missing_audit_triggers(self, session: Session) -> list[str]:
        # tgenabled: O (origin and local) and A (always) fire in normal sessions; D (disabled)
        # and R (replica only) do not.
        rows = session.execute(
            text(
                "SELECT t.tgname, t.tgenabled, p.prosrc FROM pg_trigger t "
                "JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE t.tgrelid = to_regclass('audit_entries') AND NOT t.tgisinternal"
            )
        )
        found = {name: (str(enabled), source) for name, enabled, source in rows}
        missing = []
        for name in ("audit_entries_append_only", "audit_entries_no_truncate"):
            if name not in found:
                missing.append(f"{name} (missing)")
                continue
            enabled, source = found[name]
            if enabled not in ("O", "A"):
                missing.append(f"{name} (disabled)")
            elif "RAISE EXCEPTION" not in source.upper():
                missing.append(f"{name} (its function no longer refuses)")
        return missing


def _share_disconnects(first: Engine, second: Engine) -> None:
    """A lost connection on either engine (the server restarted) renews both pools: the
    engine that saw it drops its own, and the other's idle connections are as dead. So the
    next request works, whichever engine it starts on."""

    def renew(other: Engine) -> Callable[[Any], None]:
        def on_error(context: Any) -> None:
            if context.is_disconnect:
                # what SQLAlchemy does to the engine that saw it: every connection opened
                # before now is closed and replaced at its next checkout. (dispose() would
                # leave those in use to be garbage-collected unclosed when given back.)
                other.pool._invalidate(None)  # type: ignore[arg-type]

        return on_error

    event.listen(first, "handle_error", renew(second))
    event.listen(second, "handle_error", renew(first))


def open_database(url: URL, **engine_options: Any) -> Database:
    """The database class for `url`'s backend."""
    backend = url.get_backend_name()
    cls = {"sqlite": SqliteDatabase, "postgresql": PostgresDatabase}.get(backend)
    if cls is None:
        raise ValueError(f"unsupported database backend {backend!r}")
    return cls(url, **engine_options)


def database_of(session: Session) -> Database:
    """The `Database` a session was opened by (its hooks are needed inside services)."""
    database = session.info.get("database")
    if not isinstance(database, Database):
        raise RuntimeError("session was not opened through Database.transaction()")
    return database


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value

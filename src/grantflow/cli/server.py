"""`grantflow config show | migrate | serve | worker | scheduler | demo`: running and setting
up. These open the database directly: they run where it is."""

from __future__ import annotations

import dataclasses
import gc
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
import typer
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.audit.writer import CheckpointWriter
from grantflow.auth import signin_links
from grantflow.auth.actor import Actor
from grantflow.auth.signin_links import Purpose
from grantflow.auth.users import find_user_by_email
from grantflow.cli import collector
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out
from grantflow.cli.direct import database, settings
from grantflow.config import Settings, master_key, master_keys
from grantflow.connections.outbound import outbound_policy
from grantflow.demo import ensure_demo_workspace
from grantflow.engine.worker import Worker
from grantflow.errors import ConfigurationError
from grantflow.queue.transports import open_queue
from grantflow.schedules.scheduler import Scheduler
from grantflow.store import migrate as migrations
from grantflow.store.database import Database, open_database

if TYPE_CHECKING:
    from fastapi import FastAPI

log = structlog.get_logger("grantflow.cli")
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(as_json: bool = JSON_OPTION) -> None:
    """Print the effective configuration, secrets redacted."""
    data = settings().redacted()
    if as_json:
        emit_json(data)
    else:
        emit_table(
            [{"setting": f"GRANTFLOW_{k.upper()}", "value": v} for k, v in data.items()],
            ["setting", "value"],
        )


def migrate(as_json: bool = JSON_OPTION) -> None:
    """Apply database migrations up to the newest."""
    loaded = settings(log_level="info")
    with errors_as_lines(), database(loaded, migrated=False) as db:
        master_key(loaded)
        before = migrations.current_revision(db)
        upgrade_schema(db)
        after = migrations.current_revision(db)
    if as_json:
        emit_json({"from": before, "to": after})
    else:
        out.print(f"database at revision {after} (was {before or 'empty'})")


def serve(
    host: str = typer.Option(None, help="bind address (default GRANTFLOW_HOST)"),
    port: int = typer.Option(None, help="port (default GRANTFLOW_PORT)"),
    workers: int = typer.Option(
        4,
        "--worker-concurrency",
        min=0,
        help="runs advanced at once by the embedded worker (0: none)",
    ),
    with_scheduler: bool = typer.Option(
        True,
        "--scheduler/--no-scheduler",
        help="run the embedded scheduler (leader-elected: safe beside `grantflow scheduler`)",
    ),
    sandbox: bool = typer.Option(
        False,
        "--sandbox",
        help="also run the sandbox targets the demo workspace calls, on 127.0.0.1 "
        "(GRANTFLOW_SANDBOX_PORT, GRANTFLOW_SANDBOX_SCIM_PORT)",
    ),
) -> None:
    """Run the API, an embedded worker and the scheduler in one process."""
    import uvicorn  # the web stack loads only for the commands that serve

    from grantflow.api import create_app
    from grantflow.sandbox.servers import start_sandbox

    loaded = settings(log_level=None)
    if sandbox:
        loaded = loaded.model_copy(update={"sandbox": True})  # the guard allows its ports
    with errors_as_lines():
        key = master_key(loaded)
        db = _migrated_database(loaded)
        targets = start_sandbox(loaded, key) if loaded.sandbox else None
    app = create_app(loaded, db)
    worker = None
    if workers:
        worker = Worker(
            db,
            app.state.grantflow.queue,
            concurrency=workers,
            keyring=app.state.grantflow.keyring,
            outbound=outbound_policy(loaded),
            health_check_seconds=loaded.health_check_seconds or None,
        )
    embedded = Scheduler(db, app.state.grantflow.queue) if with_scheduler else None
    checkpoints = CheckpointWriter(db, loaded)

    def stop_embedded() -> None:
        checkpoints.stop()
        if embedded:
            embedded.stop()  # releases the lease: another scheduler takes over at once
        if worker:
            worker.stop()  # finish or hand back in-flight steps
        if targets:
            targets.stop()

    # Stopped in the app's shutdown: uvicorn raises SIGTERM again once it has shut down, and
    # the default handler ends the process before any code after uvicorn.run would run.
    _stop_on_shutdown(app, stop_embedded)
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise pause every thread (the API too) for the whole heap.
    gc.collect()
    gc.freeze()
    if worker:
        worker.start()
    if embedded:
        embedded.start()
    checkpoints.start()
    try:
        uvicorn.run(
            app,
            host=host or loaded.host,
            port=port or loaded.port,
            log_config=None,
            access_log=False,
            server_header=False,
        )
    finally:
        stop_embedded()  # (when uvicorn returns without a signal; stopping twice is harmless)
        app.state.grantflow.queue.close()


def _stop_on_shutdown(app: FastAPI, stop: Callable[[], None]) -> None:
    """Run `stop` (in a thread: it waits for in-flight steps) when the app shuts down, before
    uvicorn reports the shutdown complete."""
    import anyio  # the web stack loads only for the commands that serve

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[Any]:
        async with inner(served) as state:
            try:
                yield state
            finally:
                await anyio.to_thread.run_sync(stop)

    app.router.lifespan_context = lifespan


def scheduler(
    tick_seconds: float = typer.Option(
        1.0,
        "--tick-seconds",
        min=0.01,
        help="the longest wait between looks at the jobs (the leader wakes at each due time)",
    ),
    lease_seconds: float = typer.Option(
        15.0,
        "--lease-seconds",
        min=0.5,
        help="how long a dead leader's lease blocks the others from taking over",
    ),
) -> None:
    """Run the scheduler: leader-elected through the database (run two for availability; each
    occurrence fires once). Stops on SIGTERM or SIGINT, releasing the lease."""
    loaded = settings(log_level=None)
    with errors_as_lines():
        db = _migrated_database(loaded)
    queue = open_queue(db, loaded.queue_url, prefix=loaded.queue_prefix)
    running = Scheduler(db, queue, tick_seconds=tick_seconds, lease_seconds=lease_seconds)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("scheduler.signal", signal=signal.Signals(signum).name)
        running.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    checkpoints = CheckpointWriter(db, loaded)
    checkpoints.start()
    try:
        running.run_forever()
    finally:
        checkpoints.stop()
        running.release()
        queue.close()
        db.dispose()


def _migrated_database(loaded: Settings) -> Database:
    """SQLite is migrated on start; PostgreSQL, shared by many processes, by `grantflow migrate`."""
    db = open_database(loaded.database)
    db.use_master_keys(lambda: master_keys(loaded))
    collector.resume()
    if db.dialect == "sqlite":
        upgrade_schema(db)
    elif not migrations.is_up_to_date(db):
        raise ConfigurationError(
            "the PostgreSQL schema is not at the newest migration",
            next_action="run `grantflow migrate` once, then start the servers",
        )
    return db


def upgrade_schema(db: Database) -> None:
    """Migrate; when this upgrade keyed the audit chain, pin the unkeyed entries before it."""
    keyed_before = audit.schema_is_keyed(db)
    migrations.upgrade(db)
    if not keyed_before:
        with db.transaction() as session:
            audit.seal_legacy(session, Actor.system("migrate"))


def demo(as_json: bool = JSON_OPTION) -> None:
    """Migrate and create the demo workspace (a working sandbox) unless it exists."""
    loaded = settings()
    with errors_as_lines(), database(loaded, migrated=False) as db:
        master_key(loaded)
        upgrade_schema(db)
        with db.transaction() as session:
            workspace = ensure_demo_workspace(
                session, open_queue(db, loaded.queue_url, prefix=loaded.queue_prefix), loaded
            )
            sign_in_url = demo_sign_in_link(session, loaded, workspace.admin_email)
    if as_json:
        emit_json({**dataclasses.asdict(workspace), "sign_in_url": sign_in_url})
        return
    for line in workspace.summary(f"http://{loaded.host}:{loaded.port}"):
        out.print(line, markup=False)
    minutes = loaded.signin_link_minutes
    out.print(
        f"Console:  open {sign_in_url}\n"
        f"          (signs you in as {workspace.admin_email}, once, within {minutes} minutes;"
        f" a new link: grantflow users sign-in-link {workspace.admin_email})",
        markup=False,
    )


def demo_sign_in_link(session: Session, loaded: Settings, admin_email: str) -> str:
    """A one-time console sign-in link for the demo admin (a new one each `grantflow demo`)."""
    admin = find_user_by_email(session, admin_email)
    if admin is None:
        raise ConfigurationError(f"the demo admin {admin_email} is missing")
    _link, url = signin_links.mint(session, Actor.system("demo"), loaded, admin, Purpose.SIGN_IN)
    return url

"""What every command needs: settings, the database, printing data as a table or as JSON."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from grantflow import timestamps
from grantflow.config import Settings, load_settings, master_keys
from grantflow.errors import ConfigurationError, GrantflowError
from grantflow.logging import configure_logging
from grantflow.store.database import Database, open_database

JSON_OPTION = typer.Option(False, "--json", help="print machine-readable JSON")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(exc: GrantflowError) -> NoReturn:
    err.print(f"error: {exc.message}", markup=False)
    if exc.next_action:
        err.print(f"  next: {exc.next_action}", markup=False)
    raise typer.Exit(2 if isinstance(exc, ConfigurationError) else 1)


def settings(log_level: str | None = "warning") -> Settings:
    """Load settings or stop with one line naming the bad variable."""
    try:
        loaded = load_settings()
    except ConfigurationError as exc:
        fail(exc)
    configure_logging(log_level or loaded.log_level, loaded.log_format)
    return loaded


@contextlib.contextmanager
def database(loaded: Settings | None = None) -> Iterator[Database]:
    loaded = loaded or settings()
    db = open_database(loaded.database)
    db.use_master_keys(lambda: master_keys(loaded))
    try:
        yield db
    finally:
        db.dispose()


@contextlib.contextmanager
def errors_as_lines() -> Iterator[None]:
    """Grantflow errors end the command with one line (and a next action), not a traceback."""
    try:
        yield
    except GrantflowError as exc:
        fail(exc)


def _plain(value: Any) -> Any:
    return timestamps.plain(value)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_plain, indent=2) + "\n")


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(_plain(row.get(c))) for c in columns))
    out.print(table)

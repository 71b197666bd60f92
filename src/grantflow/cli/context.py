"""What every command needs: printing data as a table or as JSON, errors as one line, and a
progress bar for long operations.

Imported by every command, so it stays light: no database, no web framework, no settings
(those are in `grantflow.cli.direct`, for the commands that open the database themselves).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from grantflow import timestamps
from grantflow.errors import ConfigurationError, GrantflowError

if TYPE_CHECKING:
    from rich.console import Console

    from grantflow.cli.client import ApiError

JSON_OPTION = typer.Option(False, "--json", help="print machine-readable JSON")


class _LazyConsole:
    """A rich Console made on first use: commands that print only JSON never load rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            # a pipe or a file gets whole lines: no wrapping at 80 columns, nothing cut
            width = None if stream.isatty() else 10_000
            self._console = Console(
                stderr=self._stderr, highlight=False, soft_wrap=True, width=width
            )
        return self._console


out: Console = _LazyConsole(stderr=False)  # type: ignore[assignment]
err: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


def fail_with(message: str, next_action: str | None = None, exit_code: int = 1) -> NoReturn:
    """End the command: one line saying what is wrong, one saying what to do."""
    err.print(f"error: {message}", markup=False)
    if next_action:
        err.print(f"  next: {next_action}", markup=False)
    raise typer.Exit(exit_code)


def fail(exc: GrantflowError | ApiError) -> NoReturn:
    configuration = isinstance(exc, ConfigurationError) or getattr(exc, "exit_code", 1) == 2
    # the API names a field of its request body ("body.params.status"); a command line has none
    message = exc.message.removeprefix("body.")
    fail_with(message, exc.next_action, 2 if configuration else 1)


@contextlib.contextmanager
def errors_as_lines(options: dict[str, str] | None = None) -> Iterator[None]:
    """Grantflow errors, local or from the API, end the command with one line (and a next
    action), not a traceback. With `options` (body field -> option, e.g. "attributes" ->
    "--attr"), the API's refusal of a field the options filled names the option instead;
    a field not listed becomes `--field-name`."""
    from grantflow.cli.client import ApiError

    try:
        yield
    except ApiError as exc:
        # (only the API's refusal of the request's shape: a service's own message says more)
        shaped = exc.message.startswith("the request is not valid")
        if options is not None and shaped and exc.details:
            field = str(exc.details[0].get("field", "")).removeprefix("body.")
            name = field.split(".")[0]
            if name:
                option = options.get(field) or options.get(name) or "--" + name.replace("_", "-")
                fail_with(f"{option}: {exc.details[0].get('message')}", exc.next_action)
        fail(exc)
    except GrantflowError as exc:
        fail(exc)


def _plain(value: Any) -> Any:
    return timestamps.plain(value)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=timestamps.json_default, indent=2) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return "" if value is None else str(_plain(value))


def _is_id(column: str) -> bool:
    return column in ("id", "run", "prefix") or column.endswith("_id")


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A table where nothing is cut: ids keep their whole width (folded onto a second line only
    when the terminal is narrower than the ids themselves), other long values wrap."""
    from rich.table import Column, Table
    from rich.text import Text

    cells = [
        ["" if row.get(c) is None else str(_plain(row.get(c))) for c in columns] for row in rows
    ]
    spec = []
    for i, name in enumerate(columns):
        if _is_id(name):
            widest = max([len(name), *(len(line[i]) for line in cells)])
            spec.append(Column(name, no_wrap=True, overflow="fold", min_width=widest))
        else:
            spec.append(Column(name, overflow="fold"))
    table = Table(*spec, show_lines=False)
    for line in cells:
        table.add_row(*(Text(cell) for cell in line))  # a "[" in a value is not markup
    out.print(table)


fold_table = emit_table  # (the name grants, incidents and reviews used for the same table)


@contextlib.contextmanager
def progress(label: str, *, quiet: bool) -> Iterator[Callable[..., None]]:
    """A progress bar (elapsed time, pulsing while the server works) on a terminal; nothing when
    `quiet` (--json) or when standard output is not a terminal. It yields `update(completed=,
    total=, description=)`, for work whose progress is known (a no-op when nothing is shown)."""
    if quiet or not out.is_terminal:
        yield lambda **_: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err.get(),  # type: ignore[attr-defined]
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=None)
        yield lambda **changes: bar.update(task, **changes)

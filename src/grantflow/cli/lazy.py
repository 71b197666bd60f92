"""A command group that imports a sub-command's module only when that sub-command runs.

`grantflow --help` lists every command from a table of names and one-line helps, without
importing any of them; `grantflow runs list` imports `grantflow.cli.runs` and nothing else of
the CLI. A table entry names a `typer.Typer` (a group such as `runs`) or a function (a single
command such as `serve`), as `"module:attribute"`. An entry can name packages its module is
imported without (`hidden`): libraries that other libraries load whenever they are installed,
for output the command never makes.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.core import _click as click  # type: ignore[attr-defined]  # (typer's own click)


@dataclass(frozen=True)
class Lazy:
    target: str  # "grantflow.cli.runs:runs_app"
    help: str  # the one line `grantflow --help` shows
    section: str = "Commands"  # the heading it is listed under
    hidden: tuple[str, ...] = ()  # packages its module's imports see as not installed


@contextlib.contextmanager
def hiding(packages: tuple[str, ...]) -> Iterator[None]:
    """Within: importing one of `packages` (not yet imported) fails as if it were not
    installed, so a library that imports it when installed goes without. After: it can be
    imported again, by code that needs it."""
    hidden = [name for name in packages if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # (the import system's "absent")
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def load(name: str, entry: Lazy) -> Any:
    """The click command for a table entry (imports its module)."""
    module_name, _, attribute = entry.target.partition(":")
    with hiding(entry.hidden):
        module = importlib.import_module(module_name)
    target = getattr(module, attribute)
    command: Any
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)  # a group even with one command (keys rotate)
    else:
        single = typer.Typer()
        single.command(name=name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """The root group; subclasses set `lazy` (name -> `Lazy`), in the order help lists them."""

    lazy: dict[str, Lazy] = {}
    _describing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(n for n in self.lazy if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return None
        if self._describing:  # help needs the one line, not the command
            return TyperCommand(cmd_name, help=entry.help, short_help=entry.help)
        command = load(cmd_name, entry)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._describing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._describing = False

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The commands under their sections' headings (plain help: the root's help is printed
        without loading rich's help renderer, which costs more than the rest of the command)."""
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            entry = self.lazy.get(name)
            section = entry.section if entry else "Commands"
            help_text = entry.help if entry else self.commands[name].get_short_help_str()
            sections.setdefault(section, []).append((name, help_text))
        for section, rows in sections.items():
            with formatter.section(section):
                formatter.write_dl(rows)

    def shell_complete(self, ctx: Any, incomplete: str) -> Any:
        self._describing = True  # completing a command's name needs only the names
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._describing = False

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return self._click_resolve_command(ctx, args)
        except click.exceptions.UsageError as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches:
                suggestions = ", ".join(repr(m) for m in matches)
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {suggestions}?"
            raise

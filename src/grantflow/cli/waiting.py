"""Waiting for work a command handed to the workers (an import, a large report): one loop for
every such command, so each says the same things the same way.

While the work is not taken, the command asks the server whether any worker is alive
(`GET /queue`): with none, it says so at once, naming the command that starts one, and goes on
waiting (a worker started meanwhile takes the work and the command ends normally). With live
workers that have not taken it after BUSY_HINT_SECONDS, it points at the queue. Ctrl-C stops
the waiting, not the work, and names the command that shows the work later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import typer

from grantflow.cli.client import ApiError, Client
from grantflow.cli.context import err

POLL_SECONDS = 1.0  # how often the command asks how far the workers are
BUSY_HINT_SECONDS = 30.0  # live workers, the work still not taken: they are busy or stuck
# (exit code of a wait stopped with Ctrl-C: the shell's for SIGINT)
INTERRUPTED = 130

NO_WORKER = "no worker is running: start one with `grantflow worker` (or `grantflow serve`)"


@dataclass
class Waiting:
    """One command's wait: `name` is how its lines start ("import 0193…"), `resume` the
    command that shows the work later."""

    api: Client
    name: str
    resume: str
    _said: set[str] = field(default_factory=set)
    _waited: float = 0.0
    _checked_at: float | None = None

    def note(self, text: str) -> None:
        """Say `text` on stderr, once per wait (the same state is seen at every poll)."""
        if text not in self._said:
            self._said.add(text)
            err.print(f"{self.name}: {text}", markup=False)

    def untaken(self, taken: bool | None) -> None:
        """The work is not known to be taken by a worker (`taken`: False, or None when the
        view cannot tell): say why, when it can be told. The workers are looked up at the
        first poll, then every BUSY_HINT_SECONDS (one may stop meanwhile)."""
        if self._checked_at is not None and self._waited - self._checked_at < BUSY_HINT_SECONDS:
            return
        self._checked_at = self._waited
        try:
            live = self.api.get("/queue")["workers"]
        except ApiError:  # (a token without run:read) nothing is said: the wait goes on
            return
        if not live:
            self.note(f"{NO_WORKER}; waiting")
        elif taken is False and self._waited >= BUSY_HINT_SECONDS:
            self.note(
                f"not taken after {BUSY_HINT_SECONDS:.0f} s although {len(live)} worker(s) "
                "are live: see what they hold with `grantflow queue status`"
            )

    def follow(
        self,
        view: dict[str, Any],
        fetch: Callable[[], dict[str, Any]],
        *,
        going: Callable[[dict[str, Any]], bool],
        taken: Callable[[dict[str, Any]], bool | None],
        each: Callable[[dict[str, Any]], None] = lambda _: None,
    ) -> dict[str, Any]:
        """Poll with `fetch` while `going(view)`; the last view. `taken(view)`: whether a worker
        took the work (None: the view cannot tell). `each` is called with every view (to
        show progress, or what needs a person)."""
        try:
            while going(view):
                time.sleep(POLL_SECONDS)
                self._waited += POLL_SECONDS
                view = fetch()
                if going(view) and taken(view) is not True:
                    self.untaken(taken(view))
                each(view)
        except KeyboardInterrupt:
            err.print(
                f"stopped waiting; {self.name} goes on in the workers: {self.resume}",
                markup=False,
            )
            raise typer.Exit(INTERRUPTED) from None
        return view

"""Waiting for work a command handed to the workers (an import, a large report): one loop for
every such command, so each says the same things the same way.

While the work goes on, the command asks the server whether any worker is alive (`GET /queue`,
at the first poll and every CHECK_SECONDS: a worker may die in the middle): with none, it says
so, naming the command that starts one, and goes on waiting (a worker started meanwhile takes
the work, or takes it over, and the command ends normally). When workers are live and the work
has not moved for BUSY_HINT_SECONDS since they were first seen, it says what it waits behind
(the command's own words). Ctrl-C stops the waiting, not the work, and names the command that
shows the work later.
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
CHECK_SECONDS = 30.0  # how often it asks whether a worker is alive
BUSY_HINT_SECONDS = 30.0  # workers live, the work not moving: say what it waits behind
# (exit code of a wait stopped with Ctrl-C: the shell's for SIGINT)
INTERRUPTED = 130

NO_WORKER = "no worker is running: start one with `grantflow worker`"


@dataclass
class Waiting:
    """One command's wait: `name` is how its lines start ("import 0193…"), `resume` the
    command that shows the work later, `behind` what to say when live workers leave it
    unmoved for BUSY_HINT_SECONDS."""

    api: Client
    name: str
    resume: str
    behind: str
    _said: set[str] = field(default_factory=set)
    _checked_at: float | None = None
    _live_since: float | None = None  # when workers were first seen live, the work unmoved

    def note(self, text: str) -> None:
        """Say `text` on stderr, once per wait (the same state is seen at every poll)."""
        if text not in self._said:
            self._said.add(text)
            err.print(f"{self.name}: {text}", markup=False)

    def _look_at_workers(self, now: float, moved: bool) -> None:
        if moved:
            self._live_since = None  # (the busy hint counts from the last move)
        if self._checked_at is None or now - self._checked_at >= CHECK_SECONDS:
            self._checked_at = now
            try:
                live = bool(self.api.get("/queue")["workers"])
            except ApiError:  # (a token without run:read) nothing is said: the wait goes on
                return
            if not live:
                self._live_since = None
                self.note(f"{NO_WORKER}; waiting")
                return
            if self._live_since is None:
                self._live_since = now
        if self._live_since is not None and now - self._live_since >= BUSY_HINT_SECONDS:
            self.note(self.behind)

    def follow(
        self,
        view: dict[str, Any],
        fetch: Callable[[], dict[str, Any]],
        *,
        going: Callable[[dict[str, Any]], bool],
        progress: Callable[[dict[str, Any]], Any],
        each: Callable[[dict[str, Any]], None] = lambda _: None,
    ) -> dict[str, Any]:
        """Poll with `fetch` while `going(view)`; the last view. `progress(view)`: what shows
        the work moving (rows done); `each` is called with every view (a progress bar, what
        needs a person)."""
        try:
            while going(view):
                time.sleep(POLL_SECONDS)
                last, view = progress(view), fetch()
                if going(view):
                    self._look_at_workers(time.monotonic(), progress(view) != last)
                each(view)
        except KeyboardInterrupt:
            err.print(
                f"stopped waiting; {self.name} goes on in the workers: {self.resume}",
                markup=False,
            )
            raise typer.Exit(INTERRUPTED) from None
        return view

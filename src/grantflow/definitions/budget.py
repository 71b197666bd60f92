"""Time budgets for rendering: a template stops when it used its CPU budget or ran past its
step's (or run's) timeout.

Rendering runs in the caller's thread (no hand-off: most renders take microseconds). One
watchdog thread looks at the renders in flight every few milliseconds and interrupts one that is
over its budget by raising an exception in its thread (delivered between two bytecodes: a
template's loops are Python code). Single operations that Python cannot interrupt (a huge
power, a huge string) never start: the sandbox refuses them before they run.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from grantflow.definitions.sandbox import TemplateLimitExceeded, limits

T = TypeVar("T")
_TICK = 0.02  # how often the watchdog looks at renders in flight
_REFIRE = 0.5  # a render still going this long after its interrupt is interrupted again
_QUIET_TICKS = 50  # ticks with no render armed before the watchdog sleeps (one second)


@dataclass(frozen=True)
class Deadline:
    """A wall-clock limit on a render: the step's timeout or what is left of the run's."""

    seconds: float
    limit: str  # e.g. "the step's timeout (3s)"
    raise_it: str  # e.g. "raise the step's `timeout`"


class BudgetExceeded(TemplateLimitExceeded):
    """A render was stopped by its CPU budget or deadline."""


class _Interrupted(BaseException):
    """Raised in a rendering thread by the watchdog; a BaseException so no `except
    Exception` inside Jinja or a filter swallows it."""


@dataclass(eq=False)
class _Watch:
    thread_id: int
    started: float
    cpu_clock: int
    cpu_budget: float
    deadline: Deadline | None
    # the thread's CPU clock when the watchdog first saw the render: read there, not when the
    # render starts, because reading a thread's CPU clock is a system call that took 7 % of a
    # busy worker's Python time at every render; most renders end before the watchdog looks,
    # and a render's budget counts from at most one tick after it started
    cpu_started: float | None = None
    fired: str | None = None  # "cpu" or "deadline" once interrupted
    fired_at: float = 0.0
    done: bool = field(default=False)
    # held by the watchdog while it interrupts the render, and by the render as it ends: an
    # interrupt is sent before the render ends or not at all
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Watchdog:
    """Renders arm and disarm their watch without a lock they share: on a worker's threads,
    which render at every step, one shared lock and a wake-up per render cost more than the
    renders. A watch goes in and out of a dict (one operation each under the GIL); the watchdog
    ticks while renders come, and sleeps after a second in which none was armed: only then
    does a render have to wake it."""

    def __init__(self) -> None:
        self._watches: dict[int, _Watch] = {}
        self._idle = threading.Condition(threading.Lock())
        self._sleeping = True  # (not started yet)
        self._armed = False  # a render armed since the last tick
        self._thread: threading.Thread | None = None

    def arm(self, watch: _Watch) -> None:
        self._watches[id(watch)] = watch
        self._armed = True
        # Read after the watch is in: a watchdog that is not asleep now will see it before it
        # sleeps (it looks at the watches after it says it sleeps, under `_idle`).
        if self._sleeping:
            with self._idle:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="template-watchdog", daemon=True
                    )
                    self._thread.start()
                    self._sleeping = False  # (a started watchdog ticks)
                self._idle.notify()

    def disarm(self, watch: _Watch) -> None:
        with watch.lock:
            watch.done = True
        self._watches.pop(id(watch), None)

    def _run(self) -> None:
        quiet = 0
        while True:
            quiet = 0 if self._armed or self._watches else quiet + 1
            self._armed = False
            if quiet >= _QUIET_TICKS:
                with self._idle:
                    while True:
                        # said before each look: a render armed after this is woken for
                        self._sleeping = True
                        if self._watches:
                            break
                        self._idle.wait()
                    self._sleeping = False
                quiet = 0
            time.sleep(_TICK)
            now = time.monotonic()
            for watch in list(self._watches.values()):
                with watch.lock:
                    self._look_at(watch, now)

    def _look_at(self, watch: _Watch, now: float) -> None:
        if watch.done or (watch.fired and now - watch.fired_at < _REFIRE):
            return
        reason = watch.fired or _over(watch, now)
        if reason is not None:
            # sent again while the render goes on: an exception that lands where Python
            # swallows it (a gc callback, a __del__) must not free the render
            watch.fired, watch.fired_at = reason, now
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(watch.thread_id), ctypes.py_object(_Interrupted)
            )


def _over(watch: _Watch, now: float) -> str | None:
    if watch.deadline is not None and now - watch.started > watch.deadline.seconds:
        return "deadline"
    try:
        cpu = time.clock_gettime(watch.cpu_clock)
    except OSError:  # the thread is gone
        return None
    if watch.cpu_started is None:  # first seen now
        watch.cpu_started = cpu
        return None
    return "cpu" if cpu - watch.cpu_started > watch.cpu_budget else None


_watchdog = _Watchdog()
_active = threading.local()


def within_budget(fn: Callable[[], T], deadline: Deadline | None, what: str = "rendering") -> T:
    """`fn()`, stopped with `template_limit_exceeded` when it uses more CPU than the template
    budget or runs past `deadline`. Nested calls share the outer budget."""
    if getattr(_active, "watch", None) is not None:
        return fn()
    thread_id = threading.get_ident()
    clock = getattr(_active, "clock", None)
    if clock is None:  # once per thread
        clock = _active.clock = time.pthread_getcpuclockid(thread_id)
    watch = _Watch(thread_id, time.monotonic(), clock, limits().cpu_seconds, deadline)
    try:
        _active.watch = watch
        try:
            _watchdog.arm(watch)
            result = fn()
        finally:
            _watchdog.disarm(watch)
            _active.watch = None
        if watch.fired:  # fired as the render ended: the exception is on its way; take it here
            for _ in range(1_000_000):
                pass
    except _Interrupted:
        _watchdog.disarm(watch)
        _active.watch = None
        raise _stopped(watch, what) from None
    if watch.fired:
        raise _stopped(watch, what)
    return result


def _stopped(watch: _Watch, what: str) -> BudgetExceeded:
    if watch.fired == "deadline" and watch.deadline is not None:
        return BudgetExceeded(
            f"{what} was stopped: it ran past {watch.deadline.limit}",
            next_action=f"make the template do less, or {watch.deadline.raise_it}",
            limit="timeout",
            limit_value=watch.deadline.seconds,
        )
    budget = watch.cpu_budget
    return BudgetExceeded(
        f"{what} was stopped: it used more than {budget:g}s of CPU, the template CPU budget "
        "(setting GRANTFLOW_TEMPLATE_CPU_SECONDS)",
        next_action="make the template do less, or raise GRANTFLOW_TEMPLATE_CPU_SECONDS",
        limit="template_cpu_seconds",
        limit_value=budget,
    )

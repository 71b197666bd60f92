"""The gate every step start passes (the engine's general path and its hot path both call
`admit`): it holds the step while the workflow is paused for safety, trips a throughput breaker
that is over its limit, holds it while a spend cap is reached, and otherwise counts it — once:
the step run (`run:step:iteration`, the same for every worker and every retry) keeps when it
was counted (`step_runs.counted_at`), so neither a retry nor a second worker counts it again.

A step start counts one executed step, one external call when the step calls out, and — the
run's first step — one run, in the workflow's counters for the minute (breakers), the day and
the month (spend caps)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.orm import Session

from grantflow.definitions.models import Workflow
from grantflow.engine.models import StepRun
from grantflow.safety import breakers, config, periods, spend
from grantflow.safety.config import Breakers
from grantflow.safety.hold import Hold
from grantflow.safety.limits import LimitExceeded, check_steps_per_run
from grantflow.store import native
from grantflow.store.database import Database, database_of

__all__ = [
    "COUNTED_AT",
    "Hold",
    "StepStart",
    "admit",
    "admit_own",
    "folded",
    "folded_ctes",
    "folded_marking",
    "step_start",
]


@dataclass(frozen=True)
class StepStart:
    """A step about to start, as the gate needs it."""

    run_id: str
    workflow_id: str
    step_id: str
    iteration: int
    sequence: int  # 1: the run's first step, which counts the run
    external: bool  # it calls an external system
    run_created_at: dt.datetime | None
    safety: dict[str, Any]  # the plan's safety block

    @property
    def kinds(self) -> list[str]:
        kinds = ["steps"]
        if self.external:
            kinds.append("external_calls")
        if self.sequence == 1:
            kinds.append("runs")
        return kinds


# the breakers each counted kind feeds (per minute)
_MINUTE_BREAKERS = {
    "runs": ("runs_per_minute", "max_runs_per_minute"),
    "external_calls": ("external_calls_per_minute", "max_external_calls_per_minute"),
}


def admit(session: Session, start: StepStart, now: dt.datetime | None = None) -> Hold | None:
    """None when the step may start (it is counted now, unless it was before); else the Hold.
    Windows and periods are read on the safety clock (`safety.config.now`), or at `now`. The
    step's step run must exist (it keeps the mark): a new one is flushed first."""
    session.flush()
    return _admit(session.connection(), start, lambda: session, now)


def admit_own(database: Database, start: StepStart) -> Hold | None:
    """`admit` outside of any transaction (the engine's hot path): on PostgreSQL the common
    case — not paused, no cap, no breaker near — is two statements in autocommit; anything else
    takes a transaction of its own."""
    if database.dialect != "postgresql":
        with database.transaction() as session:
            return admit(session, start)
    with database.autocommit.connect() as conn, contextlib.ExitStack() as stack:

        def careful() -> Session:
            return stack.enter_context(database.transaction())

        return _admit(conn, start, careful)


def _admit(
    conn: Connection,
    start: StepStart,
    careful: Callable[[], Session],
    now: dt.datetime | None = None,
) -> Hold | None:
    check_steps_per_run(start.sequence, start.step_id)  # (raises: the run fails, class safety)
    now = now or config.now()
    if conn.dialect.name == "postgresql":
        facts = _count_if_clear(conn, start, now)  # one statement does the common case
        if facts is not None and facts.counted:
            return None
    else:
        facts = _facts(conn, start, now)
    if facts is None:
        return None  # the workflow is gone: nothing to hold the step for
    if facts.paused:
        session = careful()
        pause = session.get(Workflow, start.workflow_id)
        assert pause is not None and pause.safety_pause is not None
        return breakers.held(session, start.workflow_id, pause.safety_pause)
    if facts.seen:
        return None  # counted when it first started: a retry, or another worker's pass
    kinds = start.kinds
    exempt = facts.resumed_at is not None and (
        start.run_created_at is None or start.run_created_at < facts.resumed_at
    )
    tripped = None if exempt else _over_breaker(start, kinds, facts, now)
    if tripped is None and not facts.caps:
        _count(conn, start, kinds, now)  # the common case
        return None
    session = careful()
    if tripped is not None:  # (runs held before the last resume never trip it again)
        name, figures = tripped
        pause_record = breakers.trip(session, start.workflow_id, name, figures, now)
        return breakers.held(session, start.workflow_id, pause_record)
    # caps are hard: starts that a cap concerns are counted one at a time
    database_of(session).lock(session, "spend-caps")
    capped = spend.check(session, start.workflow_id, kinds, now)
    if capped is not None:
        return capped
    _count(session.connection(), start, kinds, now)
    spend.warn_if_near(session, start.workflow_id, kinds, now)
    return None


@dataclass(frozen=True)
class _Facts:
    paused: bool
    resumed_at: dt.datetime | None
    caps: int  # spend caps on the workspace or this workflow
    seen: bool  # the step was counted before (its step run's counted_at is set)
    minute: dict[tuple[str, str], int]  # (kind, minute key) -> count
    counted: bool = False  # (PostgreSQL) nothing stood in the way: counted already


_FACTS = text(
    # (a JSON column the ORM cleared may hold JSON null rather than SQL NULL)
    "SELECT coalesce(CAST(w.safety_pause AS TEXT), 'null') <> 'null', w.safety_resumed_at, "
    "(SELECT count(*) FROM spend_caps c WHERE c.scope_id IN ('*', :wf)), "
    "EXISTS (SELECT 1 FROM step_runs s WHERE s.run_id = :run AND s.step_id = :step "
    "AND s.iteration = :iteration AND s.counted_at IS NOT NULL), "
    + ", ".join(
        f"(SELECT coalesce(sum(u.count), 0) FROM usage_counters u WHERE u.scope_id = :wf "
        f"AND u.kind = '{kind}' AND u.period_key = :{which})"
        for kind in _MINUTE_BREAKERS
        for which in ("current", "previous")
    )
    + " FROM workflows w WHERE w.id = :wf"
).columns(safety_resumed_at=Workflow.__table__.c.safety_resumed_at.type)


def _facts(conn: Connection, start: StepStart, now: dt.datetime) -> _Facts | None:
    current, previous = periods.minute_key(now), periods.minute_key(now - dt.timedelta(minutes=1))
    row = conn.execute(
        _FACTS,
        {
            "wf": start.workflow_id,
            "run": start.run_id,
            "step": start.step_id,
            "iteration": start.iteration,
            "current": current,
            "previous": previous,
        },
    ).first()
    if row is None:
        return None
    minute: dict[tuple[str, str], int] = {}
    values = list(row[4:])
    for kind in _MINUTE_BREAKERS:
        minute[(kind, current)], minute[(kind, previous)] = int(values[0]), int(values[1])
        values = values[2:]
    resumed = row[1]
    if isinstance(resumed, str):  # (SQLite through a text() column list: typed below)
        resumed = dt.datetime.fromisoformat(resumed)
    if resumed is not None and resumed.tzinfo is None:
        resumed = resumed.replace(tzinfo=dt.UTC)
    return _Facts(bool(row[0]), resumed, int(row[2]), bool(row[3]), minute)


# The shard of `usage_counters` a statement bumps (PostgreSQL): the one its connection's backend
# picks, so that concurrent transactions, each on its own connection, rarely bump the same row.
# A bump holds its row's lock until its transaction commits; on one row per counter, every step
# of a busy workflow queued behind the one before it (the step boundary's throughput with 4
# worker processes was bound by it). Readers sum the shards.
SHARDS = 16
SHARD = f"mod(pg_backend_pid(), {SHARDS})"

# PostgreSQL: bump the counters named by the CTE `counters` (kind k, period key p), in their
# order, in this connection's shard. One upsert takes the rows' locks in that order in every
# statement, so two statements on one shard queue rather than deadlock. (An UPDATE of the rows
# that exist, then an insert of the missing ones, would spare the WAL record the upsert writes
# for each row it locks; but at a period's rollover two statements that saw different rows
# would lock them in different orders, and deadlock.)
_BUMP = """bump AS (
  INSERT INTO usage_counters (scope_id, kind, period_key, shard, count)
  SELECT {scope}, c.k, c.p, {shard}, 1 FROM counters c
  ON CONFLICT (scope_id, kind, period_key, shard) DO UPDATE SET count = usage_counters.count + 1
)"""

# PostgreSQL: the facts, and — when nothing stands in the way (not paused, no spend cap, not
# counted before, no breaker that this start would take over its limit, or a run released by
# the last resume) — the mark and every counter, in one statement. Sent as the driver's own SQL:
# no statement is compiled per step. The CTEs alone (`{also}`: a further condition on counting)
# also ride on a checkpoint's statement (`folded`). `{mark}`: the statement that marks the step
# run counted when `ok` holds, returning a row if it did. `kinds`: what the start counts; the
# CTEs read and bump only those counters (a local step's: no per-minute counts to read, two rows
# to bump), since the server sets up every part of a statement each time it runs it.
_SHORT = {"runs": "runs", "external_calls": "ext"}
_SEEN = (
    "EXISTS (SELECT 1 FROM step_runs s WHERE s.run_id = %(g_run)s AND s.step_id = %(g_step)s "
    "AND s.iteration = %(g_iteration)s AND s.counted_at IS NOT NULL)"
)


@functools.cache
def _clear_ctes(kinds: tuple[str, ...], seen: bool = True) -> str:
    minute = [kind for kind in _MINUTE_BREAKERS if kind in kinds]
    sums = "".join(
        f",\n    (SELECT coalesce(sum(u.count), 0) FROM usage_counters u "
        f"WHERE u.scope_id = %(g_wf)s AND u.kind = '{kind}' AND u.period_key = %(g_{which})s) "
        f"AS {_SHORT[kind]}_{which}"
        for kind in minute
        for which in ("cur", "prev")
    )
    limits = " AND ".join(
        f"{_SHORT[kind]}_cur + {_SHORT[kind]}_prev * (1 - %(g_frac)s) + 1 "
        f"<= %(g_{_SHORT[kind]}_limit)s"
        for kind in minute
    )
    keys = [
        (kind, period)
        for kind in kinds
        for period in ("day", "month", *(("cur",) if kind in _MINUTE_BREAKERS else ()))
    ]
    rows = ", ".join(f"('{kind}', %(g_{period})s)" for kind, period in keys)
    return f"""
f AS (
  SELECT coalesce(CAST(w.safety_pause AS TEXT), 'null') <> 'null' AS paused,
    w.safety_resumed_at AS resumed_at,
    (SELECT count(*) FROM spend_caps c WHERE c.scope_id IN ('*', %(g_wf)s)) AS caps,
    {_SEEN if seen else "false"} AS seen{sums}
  FROM workflows w WHERE w.id = %(g_wf)s
), ok AS (
  SELECT 1 FROM f WHERE NOT paused AND caps = 0 AND NOT seen AND (
    (resumed_at IS NOT NULL AND (%(g_created)s::timestamptz IS NULL
      OR %(g_created)s::timestamptz < resumed_at))
    OR ({limits or "true"}))
    {{also}}
), mark AS (
  {{mark}}
), counters AS (
  SELECT v.k, v.p FROM mark, (VALUES {rows}) AS v(k, p)
), {_BUMP.format(scope="%(g_wf)s", shard=SHARD)}"""


# the mark of a step whose step run exists: its counted_at set, unless another pass set it
_MARK_ROW = (
    "UPDATE step_runs SET counted_at = %(g_now)s{sets} WHERE {row} AND counted_at IS NULL "
    "AND EXISTS (SELECT 1 FROM ok) RETURNING 1"
)
_BY_KEY = "run_id = %(g_run)s AND step_id = %(g_step)s AND iteration = %(g_iteration)s"


@functools.cache
def _clear(kinds: tuple[str, ...]) -> str:
    """The gate's own statement: the facts it read (f), and whether it counted the start."""
    return (
        "WITH "
        + _clear_ctes(kinds).format(also="", mark=_MARK_ROW.format(sets="", row=_BY_KEY))
        + " SELECT f.*, EXISTS (SELECT 1 FROM mark) AS counted FROM f"
    )


# On a checkpoint's statement, counted only when the checkpoint applied (its `step` CTE
# returned the step run).
@functools.cache
def folded_ctes(kinds: tuple[str, ...]) -> str:
    """The gate's CTEs for a start of `kinds` whose step run the statement inserts, setting its
    counted_at to COUNTED_AT (so `mark` is `ok` itself: a row not yet inserted cannot be
    updated). Nor can it have been counted before: the insert would fail on the step run's
    key, and with it the whole statement."""
    return _clear_ctes(kinds, seen=False).format(
        also="AND EXISTS (SELECT 1 FROM step)", mark="SELECT 1 FROM ok"
    )


COUNTED_AT = "CASE WHEN EXISTS (SELECT 1 FROM mark) THEN CAST(%(g_now)s AS timestamptz) END"


def folded_marking(kinds: tuple[str, ...], row: str, sets: str = "") -> str:
    """`folded_ctes` for a statement whose step run exists (`row`: the condition that finds it,
    in the driver's SQL): the mark sets its counted_at, and `sets` (", column = value, ...")
    with it — a statement cannot update one row in two of its parts."""
    return _clear_ctes(kinds).format(
        also="AND EXISTS (SELECT 1 FROM step)", mark=_MARK_ROW.format(sets=sets, row=row)
    )


def _clear_params(start: StepStart, now: dt.datetime) -> dict[str, Any]:
    limits = Breakers.of(start.safety)
    return {
        "g_wf": start.workflow_id,
        "g_run": start.run_id,
        "g_step": start.step_id,
        "g_iteration": start.iteration,
        "g_now": now,
        "g_created": start.run_created_at,
        "g_frac": (now.second + now.microsecond / 1e6) / 60,
        "g_runs_limit": limits.max_runs_per_minute,
        "g_ext_limit": limits.max_external_calls_per_minute,
        "g_cur": periods.minute_key(now),
        "g_prev": periods.minute_key(now - dt.timedelta(minutes=1)),
        "g_day": periods.day_key(now),
        "g_month": periods.month_key(now),
    }


def folded(start: StepStart) -> dict[str, Any] | None:
    """The parameters of `folded_ctes(start.kinds)` for a checkpoint (PostgreSQL) that makes
    `start`'s step the run's current one: the gate's common case — nothing stands in the way —
    counts the step in that same write, so the step needs no statement of its own before it
    starts. None when a check made here stops it (the steps-per-run limit): the step goes
    through `admit`. A step the gate did not count (paused, capped, a breaker near, counted
    before) goes through `admit` too, which holds it or finds it counted."""
    try:
        check_steps_per_run(start.sequence, start.step_id)
    except LimitExceeded:
        return None
    return _clear_params(start, config.now())


@functools.cache
def _clear_native(kinds: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """`_clear` in PostgreSQL's own placeholders, which the engine's connections take
    (store/database.py), and its parameters' names in their order."""
    query, names = native.native(_clear(kinds))
    return query.decode(), names


def _count_if_clear(conn: Connection, start: StepStart, now: dt.datetime) -> _Facts | None:
    params = _clear_params(start, now)
    query, names = _clear_native(tuple(start.kinds))
    values = tuple(params[name] for name in names)
    row = conn.exec_driver_sql(query, values).mappings().first()
    if row is None:
        return None
    minute = {
        (kind, params[f"g_{which}"]): int(row[f"{_SHORT[kind]}_{which}"])
        for kind in _MINUTE_BREAKERS
        if kind in start.kinds
        for which in ("cur", "prev")
    }
    return _Facts(
        bool(row["paused"]),
        row["resumed_at"],
        int(row["caps"]),
        bool(row["seen"]),
        minute,
        bool(row["counted"]),
    )


def _over_breaker(
    start: StepStart, kinds: list[str], facts: _Facts, now: dt.datetime
) -> tuple[str, dict[str, Any]] | None:
    """The breaker this start would take over its limit (a sliding minute: this minute's
    count plus the part of the last one still inside it), with the figures."""
    limits = Breakers.of(start.safety)
    current, previous = periods.minute_key(now), periods.minute_key(now - dt.timedelta(minutes=1))
    elapsed = now.second + now.microsecond / 1e6
    for kind in kinds:
        if kind not in _MINUTE_BREAKERS:
            continue
        name, field = _MINUTE_BREAKERS[kind]
        limit: int = getattr(limits, field)
        in_window = facts.minute[(kind, current)] + facts.minute[(kind, previous)] * (
            1 - elapsed / 60
        )
        if in_window + 1 > limit:
            return name, {
                "limit": limit,
                "in_last_minute": round(in_window),
                "setting": f"safety.{field} (default GRANTFLOW_SAFETY_{field.upper()})",
            }
    return None


_MARK = (
    "UPDATE step_runs SET counted_at = :now WHERE run_id = :run AND step_id = :step "
    "AND iteration = :iteration AND counted_at IS NULL"
)


_NOW = bindparam("now", type_=StepRun.__table__.c.counted_at.type)


def _count(conn: Connection, start: StepStart, kinds: list[str], now: dt.datetime) -> None:
    """The mark and every counter it bumps; a step run marked already (another worker counted
    the step a moment ago) bumps nothing. PostgreSQL: one statement."""
    rows: list[tuple[str, str]] = []
    for kind in kinds:
        keys = [periods.day_key(now), periods.month_key(now)]
        if kind in _MINUTE_BREAKERS:
            keys.append(periods.minute_key(now))
        rows.extend((kind, key) for key in keys)
    params: dict[str, Any] = {
        "scope": start.workflow_id,
        "run": start.run_id,
        "step": start.step_id,
        "iteration": start.iteration,
        "now": now,
    }
    for n, (kind, key) in enumerate(rows):
        params[f"k{n}"], params[f"p{n}"] = kind, key
    if conn.dialect.name == "postgresql":
        counters = ", ".join(f"(:k{n}, :p{n})" for n in range(len(rows)))
        statement = text(
            f"WITH mark AS ({_MARK} RETURNING 1), "
            f"counters AS (SELECT v.k, v.p FROM mark, (VALUES {counters}) AS v(k, p)), "
            + _BUMP.format(scope=":scope", shard=SHARD)
            + " SELECT count(*) FROM mark"
        ).bindparams(_NOW)
        if conn.execute(statement, params).scalar_one() == 0:
            _check_marked(conn, params)
        return
    if conn.execute(text(_MARK).bindparams(_NOW), params).rowcount != 1:
        _check_marked(conn, params)
        return
    # (SQLite, one writer: one shard, 0; VALUES with ON CONFLICT needs a WHERE to parse as an
    # upsert)
    values = ", ".join(f"(:scope, :k{n}, :p{n}, 1, 0)" for n in range(len(rows)))
    conn.execute(
        text(
            "INSERT INTO usage_counters (scope_id, kind, period_key, count, shard) "
            f"SELECT * FROM (VALUES {values}) WHERE true "
            "ON CONFLICT (scope_id, kind, period_key, shard) "
            "DO UPDATE SET count = usage_counters.count + 1"
        ),
        params,
    )


class StepRunMissing(RuntimeError):
    """A step start to count whose step run does not exist."""


def _check_marked(conn: Connection, params: dict[str, Any]) -> None:
    """The mark set no step run: counted a moment ago by another pass — or no step run exists
    yet, a caller's mistake that would leave the step never counted: said at once."""
    found = conn.execute(
        text(
            "SELECT 1 FROM step_runs WHERE run_id = :run AND step_id = :step "
            "AND iteration = :iteration"
        ),
        params,
    ).first()
    if found is None:
        raise StepRunMissing(
            f"the safety gate counts a step start on its step run, and "
            f"{params['run']}:{params['step']}:{params['iteration']} has none"
        )


def step_start(
    run_id: str,
    workflow_id: str,
    run_created_at: dt.datetime | None,
    iteration: int | None,
    sequence: int,
    step: Any,
    plan: Any,
) -> StepStart:
    """The StepStart of the `iteration`th pass of `step` (a PlanStep), the run's `sequence`th
    step, under `plan`."""
    from grantflow.steps.registry import get_step_type

    step_type = get_step_type(step.type)
    return StepStart(
        run_id=run_id,
        workflow_id=workflow_id,
        step_id=step.id,
        iteration=iteration or 1,
        sequence=sequence,
        external=step_type is not None and not step_type.local,
        run_created_at=run_created_at,
        safety=dict(plan.safety) if plan is not None else {},
    )

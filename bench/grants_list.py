"""The grants list at scale: `GET /api/v1/grants` and the console's `/grants` on PostgreSQL
holding N grants (default 300,000) of N/3 identities, each grant with its automation chip.
Prints ONE JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/grants_list.py --grants 30000     # a quick look
    .venv/bin/python bench/grants_list.py                    # 100,000 identities, 300,000 grants

The data set is made of rows Grantflow really wrote: three grants made through the service (one
on each of three applications; two of them have an access_granted workflow, whose run a worker
finishes), then copied in bulk (`INSERT … SELECT … generate_series`): every identity holds one
grant on each application, one a minute back from now, each with its access_granted event and,
on the two applications with a workflow, its run (ids minted at their creation, as Grantflow
mints them: UUIDv7s of that millisecond). Most runs succeeded; one in 101 waits on a timer
(pending); one in 97 failed and was replayed with success (synced, through its replay); 20
grants spread over the oldest tenth failed (needs_attention: "a few old ones"). The third
application's grants started no run (none, with the reason).

The API runs in this process under uvicorn on 127.0.0.1; requests go over HTTP with one
keep-alive client (an admin's token; the console: an admin's session cookie). Figures, per
listing, are p50 and p95 of `--requests` requests after 3 warm-ups, the items the page held and
the statements psycopg sent for one request (counted in this process: the token or session
check included):
- api_50, api_500: `GET /api/v1/grants?limit=50` and `limit=500`, the first page;
- api_needs_attention: `?automation=needs_attention&limit=50` (the 20 old failures);
- api_none: `?automation=none&limit=50` (a third of the grants: the Wiki's);
- api_none_crm: `?automation=none&application_id=CRM&limit=50` (no grant: read to the bound of a
  request, `grant_lists.MOST_READ`);
- console_grants, console_needs_attention: `/grants` and `/grants?automation=needs_attention`.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from common import (
    ACTOR,
    ADMIN_URL,
    StatementCounter,
    admin_token,
    console_client,
    log,
    percentiles,
    postgres_database,
    served,
)
from runs_list import run_to_the_end
from sqlalchemy import select, text
from sqlalchemy.engine import Connection, make_url

from grantflow.access.applications import ApplicationCreate, ApplicationKind, create_application
from grantflow.access.grants import GrantCreate, create_grant
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.access.models import EventRun
from grantflow.auth.permissions import Role
from grantflow.definitions import workflows
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database

APPLICATIONS = ("CRM", "Payroll", "Wiki")  # the last has no workflow: its grants start no run
ATTENTION = 20
COPIED_AS = ("id", "created_at", "status", "waiting_reason", "replay_of", "replay_mode")


def minted(tag: str, ms: str = "ms") -> str:
    """A UUIDv7's text of the millisecond `ms` (hex), random after (as store/base.py new_id):
    an md5 of `tag` and the copy's number, so each table's row of a copy has its own."""
    noise = f"md5('{tag}' || g)"
    return (
        f"substr({ms}, 1, 8) || '-' || substr({ms}, 9, 4) || '-7' || substr({noise}, 1, 3) || "
        f"'-8' || substr({noise}, 4, 3) || '-' || substr({noise}, 7, 12)"
    )


def seed(db: Database) -> list[dict[str, Any]]:
    """One grant per application through the service (their runs finished by a worker): the
    rows the copies are made from."""
    queue = DatabaseQueue(db)
    seeds = []
    with db.transaction() as session:
        who = create_identity(
            session, ACTOR, queue, IdentityCreate(email="seed@example.com", display_name="Seed")
        )
        for name in APPLICATIONS:
            app = create_application(
                session, ACTOR, ApplicationCreate(name=name, kind=ApplicationKind("saas"))
            )
            if name != "Wiki":
                document = {
                    "name": f"{name} access",
                    "application": app.id,
                    "trigger": {"type": "access_granted"},
                    "steps": [{"id": "only", "type": "set", "config": {"values": {"x": 1}}}],
                }
                workflows.apply_document(session, ACTOR, document, publish_it=True)
            grant = create_grant(
                session, ACTOR, queue, GrantCreate(identity=who.id, application=app.id)
            )
            run_id = session.execute(
                select(EventRun.run_id).where(EventRun.grant_id == grant.id)
            ).scalar_one_or_none()
            seeds.append({"application": app.id, "grant": grant.id, "run": run_id})
    queue.close()
    run_to_the_end(db, [s["run"] for s in seeds if s["run"]])
    return seeds


def columns_of(conn: Connection, table: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                "AND table_schema = current_schema() ORDER BY ordinal_position"
            ),
            {"t": table},
        )
    ]


def copy_grants(db: Database, total: int, seeds: list[dict[str, Any]]) -> None:
    """`total` grants (`total` / 3 identities, each on every application), with their events,
    runs, event links and replays, one grant a minute back from now."""
    people = total // len(seeds)
    span = max(1, people // 10 // ATTENTION)  # the failures: spread over the oldest tenth
    attention = [len(seeds) * (1 + i * span) for i in range(ATTENTION)]
    with db.engine.begin() as conn:
        rest = [c for c in columns_of(conn, "runs") if c not in COPIED_AS]
        conn.execute(
            text(
                "INSERT INTO identities (id, email, user_name, display_name, lifecycle_state, "
                "active, attributes, scim, source, version, created_at, updated_at) "
                "SELECT md5('i' || p)::uuid::text, 'person' || p || '@example.com', "
                "'Person' || p, 'Person ' || p, 'active', true, '{}', '{}', 'api', 1, now(), "
                "now() FROM generate_series(0, :last) AS p"
            ),
            {"last": people - 1},
        )
        # every copy: its number g (oldest first), its person, its time, the millisecond of
        # that time (hex) and of 30 s later (its replay's, if it has one)
        copies = (
            "WITH copies AS (SELECT g, g / :apps AS p, now() - (:total - g) * interval "
            "'1 minute' AS at FROM generate_series(0, :total - 1) AS g WHERE g % :apps = :k), "
            "timed AS (SELECT *, lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, "
            "'0') AS ms, lpad(to_hex((extract(epoch FROM at) * 1000)::bigint + 30000), 12, "
            "'0') AS later FROM copies) "
        )
        ids = {"g": minted("g"), "e": minted("e"), "r": minted("r"), "p": minted("p", "later")}
        for k, s in enumerate(seeds):
            shape = {"apps": len(seeds), "total": people * len(seeds), "k": k}
            conn.execute(
                text(
                    copies + "INSERT INTO grants (id, identity_id, application_id, role, "
                    "justification, status, granted_by, granted_at) SELECT "
                    f"{ids['g']}, md5('i' || p)::uuid::text, :app, '', '', 'active', "
                    "'bench', at FROM timed"
                ),
                {**shape, "app": s["application"]},
            )
            conn.execute(
                text(
                    copies + "INSERT INTO lifecycle_events (id, kind, identity_id, grant_id, "
                    "application_id, actor, details, no_run_reason, dispatch, created_at) "
                    f"SELECT {ids['e']}, e.kind, md5('i' || p)::uuid::text, {ids['g']}, "
                    "e.application_id, e.actor, e.details, e.no_run_reason, e.dispatch, at "
                    "FROM timed, lifecycle_events AS e WHERE e.grant_id = :seed"
                ),
                {**shape, "seed": s["grant"]},
            )
            if s["run"] is None:
                continue
            listed = ", ".join(f'"{c}"' for c in rest)
            picked = ", ".join(f'r."{c}"' for c in rest)
            status = (
                "CASE WHEN g = ANY(:attention) OR g % 97 = 5 THEN 'failed' "
                "WHEN g % 101 = 3 THEN 'waiting' ELSE 'succeeded' END"
            )
            conn.execute(
                text(
                    copies + f"INSERT INTO runs (id, created_at, status, waiting_reason, "
                    f"{listed}) SELECT {ids['r']}, at, {status}, CASE WHEN {status} = "
                    f"'waiting' THEN 'delay' END, {picked} FROM timed, runs AS r "
                    "WHERE r.id = :seed"
                ),
                {**shape, "seed": s["run"], "attention": attention},
            )
            conn.execute(
                text(
                    copies + "INSERT INTO lifecycle_event_runs (run_id, event_id, workflow_id, "
                    f"grant_id, identity_id, offboarding) SELECT {ids['r']}, {ids['e']}, "
                    f"l.workflow_id, {ids['g']}, md5('i' || p)::uuid::text, false "
                    "FROM timed, lifecycle_event_runs AS l WHERE l.run_id = :seed"
                ),
                {**shape, "seed": s["run"]},
            )
            # the replays, 30 s after their failed run
            conn.execute(
                text(
                    copies + f"INSERT INTO runs (id, created_at, status, replay_of, replay_mode, "
                    f"{listed}) SELECT {ids['p']}, at + interval '30 seconds', "
                    f"'succeeded', {ids['r']}, 'as_is', "
                    f"{picked} FROM timed, runs AS r WHERE r.id = :seed AND g % 97 = 5 "
                    "AND NOT g = ANY(:attention)"
                ),
                {**shape, "seed": s["run"], "attention": attention},
            )
        for table in ("identities", "grants", "lifecycle_events", "lifecycle_event_runs", "runs"):
            conn.execute(text(f"ANALYZE {table}"))


def measured(
    counter: StatementCounter, get: Callable[[], httpx.Response], requests: int
) -> dict[str, Any]:
    """p50 and p95 of `get`, what its answer held (an API page's items, a console page's
    grant rows) and the statements one request sent."""
    with counter.counting() as by_thread:
        get().raise_for_status()
        statements = sum(by_thread.values())
    figures, answer = percentiles(lambda: get().raise_for_status(), requests)
    if answer.headers["content-type"].startswith("application/json"):
        items = len(answer.json()["items"])
    else:
        items = answer.text.count('href="/grants/')
    return {**figures, "items": items, "statements": statements}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=300_000, help="grants in the database")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per listing")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db:
        log("seeding: a grant on each application, their runs through a worker")
        seeds = seed(db)
        log(f"copying {options.grants} grants")
        began = time.monotonic()
        copy_grants(db, options.grants, seeds)
        log(f"copied in {time.monotonic() - began:.0f}s")
        token = admin_token(db)
        with db.engine.connect() as conn:
            grants = conn.execute(text("SELECT count(*) FROM grants")).scalar_one()
            runs = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
        attention = {"automation": "needs_attention", "limit": 50}
        unmatched = {"automation": "none", "application_id": seeds[0]["application"], "limit": 50}
        with (
            served(db) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600
            ) as api,
            console_client(db, url, "console@example.com", Role.ADMIN) as console,
            StatementCounter() as counter,
        ):
            listings: dict[str, Callable[[], httpx.Response]] = {
                "api_50": lambda: api.get("/api/v1/grants", params={"limit": 50}),
                "api_500": lambda: api.get("/api/v1/grants", params={"limit": 500}),
                "api_needs_attention": lambda: api.get("/api/v1/grants", params=attention),
                "api_none": lambda: api.get(
                    "/api/v1/grants", params={"automation": "none", "limit": 50}
                ),
                "api_none_crm": lambda: api.get("/api/v1/grants", params=unmatched),
                "console_grants": lambda: console.get("/grants"),
                "console_needs_attention": lambda: console.get(
                    "/grants", params={"automation": "needs_attention"}
                ),
            }
            figures = {}
            for name, get in listings.items():
                log(f"timing {name}")
                figures[name] = measured(counter, get, options.requests)
    print(json.dumps({"database": "postgresql", "grants": grants, "runs": runs, **figures}))


if __name__ == "__main__":
    main()

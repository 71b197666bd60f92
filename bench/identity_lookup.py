"""Finding a person at scale: N identities (default 100,000) on PostgreSQL, looked up as an
identity provider and the API look them up. Prints ONE JSON object on stdout; progress goes to
stderr.

    .venv/bin/python bench/identity_lookup.py --people 20000     # a quick look
    .venv/bin/python bench/identity_lookup.py                    # 100,000 identities

The identities are written in bulk (`INSERT … SELECT … generate_series`): person<n>@example.com,
userName Person<n>. The API runs in this process under uvicorn on 127.0.0.1; requests go over
HTTP with one keep-alive client. Figures are p50 / p95 ms of `--requests` requests after 3
warm-ups:
- scim_user_name_eq: `GET /scim/v2/Users?filter=userName eq "person<n>"` (an identity
  provider's lookup before each push), with a SCIM token;
- identity_by_email: `GET /api/v1/identities/<E-MAIL>` (upper case: any case finds it);
- identity_change: `PATCH /api/v1/identities/{id}` of the title (which checks that the e-mail
  and userName are still free);
- identity_search: `GET /api/v1/identities?q=<part of a name>` (the console's search box) for
  a part that a few people's e-mail and userName hold, and identity_search_none for one
  nobody's does;
- scim_email_eq: `GET /scim/v2/Users?filter=emails.value eq "<e-mail>"`.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from typing import Any

import httpx
from common import (
    ACTOR,
    ADMIN_URL,
    admin_token,
    bulk_identities,
    log,
    percentiles,
    postgres_database,
    served,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url

from grantflow.auth.tokens import create_token, scim_service_user
from grantflow.logging import configure_logging


def timed(call: Callable[[int], Any], requests: int) -> dict[str, float]:
    """`call` of a different person each time (every 7,919th)."""
    picks = itertools.count(7, 7919)
    return percentiles(lambda: call(next(picks)), requests)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000, help="identities")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per kind")
    options = parser.parse_args()
    configure_logging("warning", "json")
    people = options.people
    with postgres_database(make_url(ADMIN_URL)) as db:
        log(f"writing {people} identities")
        bulk_identities(db, people)
        with db.engine.begin() as conn:
            ids = dict(conn.execute(text("SELECT user_name, id FROM identities")).all())
        token = admin_token(db)
        with db.transaction() as session:
            scim_user = scim_service_user(session, ACTOR)
            _, scim_token = create_token(
                session, ACTOR, user_id=scim_user, name="idp", ttl_days=1, scope="scim"
            )
        with (
            served(db) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as api,
            httpx.Client(
                base_url=f"{url}/scim/v2",
                headers={"Authorization": f"Bearer {scim_token}"},
                timeout=60,
            ) as scim,
        ):

            def lookup(n: int) -> None:
                query = f'userName eq "person{n % people}"'
                scim.get("/Users", params={"filter": query}).raise_for_status()

            def by_email(n: int) -> None:
                api.get(f"/api/v1/identities/PERSON{n % people}@EXAMPLE.COM").raise_for_status()

            def change(n: int) -> None:
                identity = ids[f"Person{n % people}"]
                body = {"title": f"Engineer {n}"}
                api.patch(f"/api/v1/identities/{identity}", json=body).raise_for_status()

            def search(n: int) -> None:
                found = api.get("/api/v1/identities", params={"q": f"son{n % people}9"})
                found.raise_for_status()

            def search_none(n: int) -> None:
                found = api.get("/api/v1/identities", params={"q": f"nobody{n}"})
                found.raise_for_status()

            def by_scim_email(n: int) -> None:
                query = f'emails.value eq "person{n % people}@example.com"'
                scim.get("/Users", params={"filter": query}).raise_for_status()

            figures = {
                "scim_user_name_eq": timed(lookup, options.requests),
                "identity_by_email": timed(by_email, options.requests),
                "identity_change": timed(change, options.requests),
                "identity_search": timed(search, options.requests),
                "identity_search_none": timed(search_none, options.requests),
                "scim_email_eq": timed(by_scim_email, options.requests),
            }
    print(json.dumps({"database": "postgresql", "identities": people, **figures}))


if __name__ == "__main__":
    main()

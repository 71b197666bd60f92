"""Idempotent creation: a POST sent with an `Idempotency-Key` header creates what it creates once.

A client that timed out, or got a 5xx, cannot tell whether its request created the run (or the
grant, the identity). Sent again with the same key, it gets the first response again, marked
`Idempotency-Replayed: true`, and nothing is created twice:

- the key is scoped to the user (two users may use the same key), and bound to the request it
  first came with: method, path and query, and the body (a SHA-256 of its canonical JSON). The
  same key with anything else is a 422 naming the header;
- the key's row is written in the same transaction as what the request creates, with the
  response: either both are committed or neither. Two requests racing with one key: the second
  waits for the first (PostgreSQL's unique index; SQLite's single writer) and gets its response;
- only a success is kept: a request that failed created nothing, and its retry runs anew;
- a key is kept `GRANTFLOW_IDEMPOTENCY_TTL_HOURS` (24 h), then purged by the next request that
  sends a key (a retry after that creates anew).

Routes use it as a dependency (`Depends(idempotency)`, which also documents the header) and
create through `Idempotency.respond`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic_core import to_jsonable_python
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from grantflow.auth.actor import Actor
from grantflow.auth.models import IdempotencyKey
from grantflow.errors import ValidationError
from grantflow.store.base import new_id, utcnow
from grantflow.store.database import Database, database_of

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotency-Replayed"
_PURGE_BATCH = 500


@dataclass(frozen=True)
class Idempotency:
    """The Idempotency-Key of one request (None: none was sent) and what it is bound to."""

    key: str | None
    method: str
    path: str
    body_hash: str
    ttl: dt.timedelta

    def respond(
        self, session: Session, actor: Actor, status_code: int, create: Callable[[], Any]
    ) -> JSONResponse:
        """`create()` in the caller's transaction, answered with `status_code`; with a key
        already used for this same request, the stored response instead (nothing created)."""
        if self.key is None:
            return JSONResponse(to_jsonable_python(create()), status_code)
        claimed = self._claim(session, actor.user_id or actor.label)
        if isinstance(claimed, JSONResponse):
            return claimed  # the first response again: nothing is created
        body = to_jsonable_python(create())  # (as FastAPI writes a returned value)
        claimed.status_code, claimed.response = status_code, body
        return JSONResponse(body, status_code)

    def _claim(self, session: Session, owner: str) -> IdempotencyKey | JSONResponse:
        """Take the key for this request (its new row), or the response a first request with
        it got."""
        now = utcnow()
        mine = IdempotencyKey(
            id=new_id(),
            owner=owner,
            key=self.key,
            method=self.method,
            path=self.path,
            body_hash=self.body_hash,
            status_code=0,  # (set with the response, in this same transaction)
            response=None,
            created_at=now,
            expires_at=now + self.ttl,
        )
        try:
            with session.begin_nested():  # a clash rolls back this insert only
                session.add(mine)
        except IntegrityError as exc:
            if not database_of(session).is_unique_violation(exc):
                raise
        else:
            return mine
        # Taken by an earlier request (committed: a racing one was waited for).
        first = session.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.owner == owner, IdempotencyKey.key == self.key
            )
        ).scalar_one()
        if first.expires_at <= now:  # expired, not purged yet: this request starts anew
            session.delete(first)
            session.flush()
            return self._claim(session, owner)
        if (first.method, first.path, first.body_hash) != (self.method, self.path, self.body_hash):
            other = (
                "with a different body"
                if (first.method, first.path) == (self.method, self.path)
                else f"{first.method} {first.path}"
            )
            raise ValidationError(
                f"{KEY_HEADER}: this key was already used for another request ({other}); "
                "a key stands for one request",
                details=[
                    {
                        "field": f"header.{KEY_HEADER}",
                        "message": "already used for another request",
                        "type": "idempotency_key_reused",
                    }
                ],
                code="idempotency_key_reused",
                next_action="send a new key with a new request (the same key only to retry the "
                "same request)",
            )
        return JSONResponse(first.response, first.status_code, headers={REPLAYED_HEADER: "true"})


def purge_expired(database: Database, now: dt.datetime | None = None) -> int:
    """Delete expired keys (a batch at a time, in a short transaction of its own); how many."""
    with database.transaction() as session:
        ids = list(
            session.execute(
                select(IdempotencyKey.id)
                .where(IdempotencyKey.expires_at <= (now or utcnow()))
                .limit(_PURGE_BATCH)
            ).scalars()
        )
        if ids:
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids)))
        return len(ids)


def _body_hash(body: bytes) -> str:
    """SHA-256 of the body as canonical JSON (key order and spacing do not matter), or of its
    bytes when it is not JSON."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


async def idempotency(
    request: Request,
    key: str | None = Header(
        None,
        alias=KEY_HEADER,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="a unique key for this request (printable ASCII, up to 255 characters): "
        "sent again with the same request, it returns the first response (with "
        f"{REPLAYED_HEADER}: true) and creates nothing twice; kept 24 h",
    ),
) -> Idempotency:
    state = request.app.state.grantflow
    ttl = dt.timedelta(hours=state.settings.idempotency_ttl_hours)
    if key is None:
        return Idempotency(None, request.method, request.url.path, "", ttl)
    await run_in_threadpool(purge_expired, state.database)
    query = request.url.query
    return Idempotency(
        key,
        request.method,
        request.url.path + (f"?{query}" if query else ""),
        _body_hash(await request.body()),
        ttl,
    )

"""Inbound webhooks: `POST /hooks/{workflow_key}` (signed deliveries that start runs of a
`webhook`-triggered workflow), and under /api/v1 the workflow's signing secret (created or
rotated, shown once) and its recent deliveries."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Public, Require
from grantflow.api.state import database, state_of
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.safety import webhooks
from grantflow.store.database import Database

router = APIRouter(tags=["webhooks"])


class Signed(Public):
    """Declares a route that takes no API token because it authenticates each request by
    itself: `POST /hooks/{workflow_key}` checks an HMAC-SHA256 signature made with the
    workflow's secret (safety/signing.py) before it does anything, and refuses (401) every
    request whose signature does not verify. It is a `Public` guard as far as tokens go, kept
    apart so the deny-by-default test lists signed routes on their own."""


class SecretOut(BaseModel):
    workflow_id: str
    secret: str
    created_at: dt.datetime
    rotated: bool
    shown_once: bool = True


class DeliveriesOut(BaseModel):
    items: list[dict[str, Any]]


@router.post(
    "/hooks/{workflow_key}",
    status_code=202,
    dependencies=[Depends(Signed())],
    responses={
        200: {"description": "the delivery was accepted before: the run it started then"},
        401: {"description": "the signature or its timestamp is not valid"},
    },
)
async def receive_delivery(workflow_key: str, request: Request) -> JSONResponse:
    """A signed delivery: 202 with the run it started (200 with the same run when the delivery
    was accepted before); 401 when the signature or its timestamp is not valid; 422 naming
    each field when the body does not match the trigger's input schema."""
    body = await request.body()
    state = state_of(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        receipt = await run_in_threadpool(
            webhooks.receive,
            state.database,
            state.keyring,
            state.queue,
            workflow_key,
            headers,
            body,
        )
    except webhooks.WebhookRefused as refused:
        raise refused.error from None
    return JSONResponse(
        {
            "run_id": receipt.run_id,
            "delivery_id": receipt.delivery_id,
            "duplicate": receipt.duplicate,
            "run_status": receipt.run_status,
            "held_for_safety": receipt.held,
        },
        status_code=receipt.http_status,
    )


@router.post(f"{API_PREFIX}/workflows/{{workflow_id}}/webhook-secret", response_model=SecretOut)
def rotate_webhook_secret(
    workflow_id: str,
    request: Request,
    actor: Actor = Depends(Require(Permission.CREDENTIAL_WRITE)),
    db: Database = Depends(database),
) -> SecretOut:
    """Create the webhook secret, or rotate it (the old one stops working at once). The
    secret is in this answer only: it is stored encrypted and never shown again."""
    with db.transaction() as session:
        new = webhooks.set_secret(session, actor, state_of(request).keyring, workflow_id)
    return SecretOut(
        workflow_id=new.workflow_id,
        secret=new.secret,
        created_at=new.created_at,
        rotated=new.rotated,
    )


@router.get(f"{API_PREFIX}/workflows/{{workflow_id}}/webhook")
def get_webhook(
    workflow_id: str,
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """The webhook's path, whether a secret is set (never the secret) and the scheme."""
    with db.transaction() as session:
        return webhooks.secret_status(session, workflow_id)


@router.get(f"{API_PREFIX}/workflows/{{workflow_id}}/deliveries", response_model=DeliveriesOut)
def list_deliveries(
    workflow_id: str,
    failed: bool = Query(False, description="only the refused deliveries"),
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> DeliveriesOut:
    """The newest deliveries, newest first (the last 100 refusals are kept): time, outcome,
    status code, reason, delivery id and run. Never a body, a signature or a secret."""
    with db.transaction() as session:
        return DeliveriesOut(items=webhooks.deliveries(session, workflow_id, failed_only=failed))

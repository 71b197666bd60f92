"""Inbound webhooks: a `webhook`-triggered workflow's signing secret (write-only, rotatable,
shown once), and the one function that takes a delivery — checks its signature, its time and
whether it was seen before, validates its body against the trigger's input schema, and starts
the run (held like any other run while the workflow is paused for safety).

A refusal never says which part of the signature check failed (unknown workflow, no secret, a
missing or malformed header, a wrong digest are one 401 to the sender); the workflow's
deliveries list says why, to the people who may read the workflow. Neither the secret nor the
body nor the signature is stored with a delivery, logged, or put in the run.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections.crypto import Keyring
from grantflow.definitions.document import TriggerType
from grantflow.definitions.lookup import find_workflow, get_workflow
from grantflow.definitions.models import Workflow
from grantflow.engine.plans import plan_for
from grantflow.engine.runs import check_dispatching, start_run, validate_input
from grantflow.errors import (
    BadRequest,
    Conflict,
    GrantflowError,
    NotFound,
    Unauthenticated,
    ValidationError,
)
from grantflow.queue.interface import Queue
from grantflow.safety import signing
from grantflow.safety.models import DeliveryOutcome, WebhookDelivery, WebhookSecret
from grantflow.store.base import new_id, utcnow
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.webhooks")

KEPT_REFUSALS = 100  # per workflow, the newest
KEPT_ACCEPTED = dt.timedelta(days=1)  # long past the timestamp tolerance: dedup keys expire
_DELIVERY_ID_MAX = 200
_NOT_VALID = "the webhook signature is not valid"
_SIGNATURE_NEXT = (
    "sign the raw body with the workflow's webhook secret as documented "
    f"({signing.SIGNATURE_HEADER}: t=<unix time>,v1=<hex HMAC-SHA256 of '<t>.<body>'>)"
)
WEBHOOK_ACTOR = Actor.system("webhook")


class WebhookRefused(GrantflowError):
    """A delivery was refused; `reason` (recorded on the workflow) may say more than the
    message the sender gets."""

    def __init__(
        self, error: GrantflowError, reason: str, workflow_id: str | None, delivery_id: str | None
    ) -> None:
        super().__init__(error.message, next_action=error.next_action, code=error.code)
        self.error = error
        self.reason = reason
        self.workflow_id = workflow_id
        self.delivery_id = delivery_id


@dataclass(frozen=True)
class Receipt:
    """What the sender is told: the run its delivery started (or started before)."""

    run_id: str
    delivery_id: str
    duplicate: bool
    run_status: str
    held: bool  # the workflow is paused for safety: the run waits for its resume

    @property
    def http_status(self) -> int:
        return 200 if self.duplicate else 202


@dataclass(frozen=True)
class NewSecret:
    secret: str  # shown once
    workflow_id: str
    created_at: dt.datetime
    rotated: bool


# --- the secret --------------------------------------------------------------------------------
def _webhook_workflow(session: Session, workflow_id: str) -> Workflow:
    workflow = get_workflow(session, workflow_id)
    if workflow.trigger_type != TriggerType.WEBHOOK:
        raise Conflict(
            f"workflow {workflow.name!r} is triggered by {workflow.trigger_type}, not by a "
            "webhook: it has no webhook secret",
            code="not_a_webhook_workflow",
            next_action="give the workflow trigger {type: webhook} and publish it",
        )
    return workflow


def set_secret(session: Session, actor: Actor, keyring: Keyring, workflow_id: str) -> NewSecret:
    """Create the workflow's signing secret, or rotate it (the old one stops working at once).
    The secret is returned here and never again; the audit entry names no part of it."""
    actor.require(Permission.CREDENTIAL_WRITE)
    workflow = _webhook_workflow(session, workflow_id)
    secret = signing.new_secret()
    row = session.execute(
        select(WebhookSecret).where(WebhookSecret.workflow_id == workflow.id).with_for_update()
    ).scalar_one_or_none()
    now = utcnow()
    rotated = row is not None
    if row is None:
        row_id = new_id()
        key_id, ciphertext = keyring.encrypt({"secret": secret}, row_id)
        row = WebhookSecret(
            id=row_id,
            workflow_id=workflow.id,
            key_id=key_id,
            ciphertext=ciphertext,
            created_at=now,
            created_by=actor.label,
        )
        session.add(row)
    else:
        row.key_id, row.ciphertext = keyring.encrypt({"secret": secret}, row.id)
        row.rotated_at, row.rotated_by = now, actor.label
    audit.record(
        session,
        actor,
        "workflow.webhook_secret_rotated" if rotated else "workflow.webhook_secret_created",
        "workflow",
        workflow.id,
        {"workflow": workflow.name},
    )
    return NewSecret(secret, workflow.id, now, rotated)


def secret_status(session: Session, workflow_id: str) -> dict[str, Any]:
    """What may be shown of the secret: whether there is one, when and by whom it was set."""
    workflow = _webhook_workflow(session, workflow_id)
    row = session.execute(
        select(WebhookSecret).where(WebhookSecret.workflow_id == workflow.id)
    ).scalar_one_or_none()
    return {
        "workflow_id": workflow.id,
        "path": f"/hooks/{workflow.id}",
        "secret_set": row is not None,
        "created_at": row.created_at if row else None,
        "created_by": row.created_by if row else None,
        "rotated_at": row.rotated_at if row else None,
        "rotated_by": row.rotated_by if row else None,
        "signature_header": signing.SIGNATURE_HEADER,
        "delivery_header": signing.DELIVERY_HEADER,
        "tolerance_seconds": signing.TOLERANCE_SECONDS,
    }


def deliveries(session: Session, workflow_id: str, *, failed_only: bool = False) -> list[Any]:
    """The newest deliveries (at most 100 refusals are kept): time, outcome, reason, run."""
    workflow = _webhook_workflow(session, workflow_id)
    query = select(WebhookDelivery).where(WebhookDelivery.workflow_id == workflow.id)
    if failed_only:
        query = query.where(WebhookDelivery.outcome == DeliveryOutcome.REFUSED)
    rows = session.execute(
        query.order_by(WebhookDelivery.received_at.desc(), WebhookDelivery.id.desc()).limit(
            KEPT_REFUSALS
        )
    ).scalars()
    return [
        {
            "received_at": row.received_at,
            "outcome": row.outcome,
            "status_code": row.status_code,
            "reason": row.reason,
            "delivery_id": row.delivery_id,
            "run_id": row.run_id,
        }
        for row in rows
    ]


# --- a delivery ----------------------------------------------------------------------------------
def receive(
    database: Database,
    keyring: Keyring,
    queue: Queue,
    workflow_key: str,
    headers: dict[str, str],
    body: bytes,
    now: dt.datetime | None = None,
) -> Receipt:
    """Take one delivery (headers lower-cased). Raises `WebhookRefused` carrying the error the
    sender gets; the refusal is recorded on the workflow when there is one to record it on."""
    now = now or utcnow()
    delivery_id = (headers.get(signing.DELIVERY_HEADER.lower()) or "").strip() or None
    try:
        with database.transaction() as session:
            return _accept(session, keyring, queue, workflow_key, headers, body, delivery_id, now)
    except WebhookRefused as refused:
        _record_refusal(database, refused, now)
        log.info(
            "webhook.refused",
            workflow_id=refused.workflow_id,
            code=refused.code,
            delivery_id=refused.delivery_id,
        )
        raise
    except IntegrityError as exc:
        if not database.is_unique_violation(exc):
            raise
        # the same delivery arrived twice at once: the other one started the run
        with database.transaction() as session:
            workflow = _find(session, workflow_key)
            signature = signing.parse(headers.get(signing.SIGNATURE_HEADER.lower()))
            if workflow is None or signature is None:
                raise
            original = _seen(session, workflow.id, delivery_id, signature.fingerprint)
            if original is None:
                raise
            return _duplicate(session, workflow, original, delivery_id, now)


def _refuse(
    error: GrantflowError, reason: str, workflow: Workflow | None, delivery_id: str | None
) -> WebhookRefused:
    return WebhookRefused(error, reason, workflow.id if workflow else None, delivery_id)


def _find(session: Session, workflow_key: str) -> Workflow | None:
    try:
        workflow = find_workflow(session, workflow_key)
    except NotFound:
        return None
    return workflow if workflow.trigger_type == TriggerType.WEBHOOK else None


def _accept(
    session: Session,
    keyring: Keyring,
    queue: Queue,
    workflow_key: str,
    headers: dict[str, str],
    body: bytes,
    delivery_id: str | None,
    now: dt.datetime,
) -> Receipt:
    unauthenticated = Unauthenticated(
        _NOT_VALID, next_action=_SIGNATURE_NEXT, code="webhook_signature_invalid"
    )
    workflow = _find(session, workflow_key)
    if workflow is None:  # the same answer as a bad signature: keys are not enumerable
        raise _refuse(unauthenticated, "no webhook workflow with this key", None, delivery_id)
    signature = signing.parse(headers.get(signing.SIGNATURE_HEADER.lower()))
    if signature is None:
        reason = f"the {signing.SIGNATURE_HEADER} header is missing or malformed"
        raise _refuse(unauthenticated, reason, workflow, delivery_id)
    secret = _secret(session, keyring, workflow)
    if secret is None:
        reason = "the workflow has no webhook secret yet: create one (webhook-secret)"
        raise _refuse(unauthenticated, reason, workflow, delivery_id)
    if not signing.matches(secret, signature, body):
        reason = "the signature does not match the body under the workflow's secret"
        raise _refuse(unauthenticated, reason, workflow, delivery_id)
    # Signed with the secret: from here on the sender may be told exactly what is wrong.
    age = now.timestamp() - signature.timestamp
    if abs(age) > signing.TOLERANCE_SECONDS:
        when = f"{age:.0f}s old" if age > 0 else f"{-age:.0f}s in the future"
        stale = Unauthenticated(
            f"the signature's timestamp is {when}: deliveries must be signed within "
            f"{signing.TOLERANCE_SECONDS}s of when they arrive (replays are refused)",
            next_action="sign each delivery when it is sent (check the sender's clock)",
            code="webhook_timestamp_out_of_range",
        )
        raise _refuse(stale, f"timestamp {when}", workflow, delivery_id)
    if delivery_id is None or len(delivery_id) > _DELIVERY_ID_MAX:
        error = BadRequest(
            f"the {signing.DELIVERY_HEADER} header is missing or longer than "
            f"{_DELIVERY_ID_MAX} characters",
            next_action=f"send a unique id per delivery in {signing.DELIVERY_HEADER} "
            "(the same id when the sender retries it)",
            code="webhook_delivery_id_missing",
        )
        raise _refuse(error, f"no usable {signing.DELIVERY_HEADER} header", workflow, None)
    original = _seen(session, workflow.id, delivery_id, signature.fingerprint)
    if original is not None:
        return _duplicate(session, workflow, original, delivery_id, now)
    run_input = _input(session, workflow, body, delivery_id)
    try:
        check_dispatching(workflow)
    except Conflict as exc:
        raise _refuse(exc, exc.message, workflow, delivery_id) from None
    run = start_run(session, WEBHOOK_ACTOR, queue, workflow.id, run_input, trigger="webhook")
    session.add(
        WebhookDelivery(
            workflow_id=workflow.id,
            delivery_id=delivery_id,
            dedup_key=delivery_id,
            signature_hash=signature.fingerprint,
            received_at=now,
            outcome=DeliveryOutcome.ACCEPTED,
            status_code=202,
            run_id=run.id,
        )
    )
    session.flush()  # a concurrent twin fails here, before anything commits
    log.info("webhook.accepted", workflow_id=workflow.id, run_id=run.id, delivery_id=delivery_id)
    return Receipt(run.id, delivery_id, False, run.status, run.waiting_reason == "safety")


def _secret(session: Session, keyring: Keyring, workflow: Workflow) -> str | None:
    row = session.execute(
        select(WebhookSecret).where(WebhookSecret.workflow_id == workflow.id)
    ).scalar_one_or_none()
    if row is None:
        return None
    secret: str = keyring.decrypt(row.key_id, row.ciphertext, row.id)["secret"]
    return secret


def _seen(
    session: Session, workflow_id: str, delivery_id: str | None, fingerprint: str
) -> WebhookDelivery | None:
    """The accepted delivery this one repeats: the same delivery id (a sender's retry) or the
    same signature (a captured request replayed under another id)."""
    same = WebhookDelivery.signature_hash == fingerprint
    if delivery_id is not None:
        same = or_(same, WebhookDelivery.dedup_key == delivery_id)
    return (
        session.execute(
            select(WebhookDelivery)
            .where(WebhookDelivery.workflow_id == workflow_id, same)
            .order_by(WebhookDelivery.received_at)
            .limit(1)
        )
        .scalars()
        .first()
    )


def _duplicate(
    session: Session,
    workflow: Workflow,
    original: WebhookDelivery,
    delivery_id: str | None,
    now: dt.datetime,
) -> Receipt:
    from grantflow.engine.models import Run

    session.add(
        WebhookDelivery(
            workflow_id=workflow.id,
            delivery_id=delivery_id,
            received_at=now,
            outcome=DeliveryOutcome.DUPLICATE,
            status_code=200,
            reason=f"already accepted at {original.received_at.isoformat()}: no second run",
            run_id=original.run_id,
        )
    )
    run = session.get(Run, original.run_id) if original.run_id else None
    assert original.run_id is not None
    return Receipt(
        original.run_id,
        original.delivery_id or "",
        True,
        run.status if run else "unknown",
        bool(run and run.waiting_reason == "safety"),
    )


def _input(session: Session, workflow: Workflow, body: bytes, delivery_id: str) -> dict[str, Any]:
    """The body as the run's input, validated against the trigger's input schema (422 naming
    each field). The recorded reason names the fields and rules, never the values sent."""
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        malformed = BadRequest(
            "the request body is not valid JSON",
            next_action="send the run input as a JSON object",
            code="malformed_json",
        )
        raise _refuse(malformed, "the body is not valid JSON", workflow, delivery_id) from None
    if not isinstance(data, dict):
        error = ValidationError(
            "the request body must be a JSON object (the run's input)",
            details=[{"field": "input", "message": "must be an object"}],
            code="input_invalid",
        )
        raise _refuse(error, "the body is not a JSON object", workflow, delivery_id)
    if workflow.active_version is not None:
        schema = plan_for(session, workflow.id, workflow.active_version).trigger.get(
            "input_schema"
        ) or {"type": "object"}
        try:
            validate_input(schema, data)
        except ValidationError as exc:
            where = "; ".join(f"{d['field']} ({d.get('rule', 'invalid')})" for d in exc.details)
            reason = f"the body does not match the input schema: {where}"
            raise _refuse(exc, reason, workflow, delivery_id) from None
    return data


@contextmanager
def _ignored() -> Iterator[None]:
    try:
        yield
    except Exception:  # recording a refusal must never turn it into a 500
        log.exception("webhook.refusal_not_recorded")


def _record_refusal(database: Database, refused: WebhookRefused, now: dt.datetime) -> None:
    if refused.workflow_id is None:
        return
    with _ignored(), database.transaction() as session:
        session.add(
            WebhookDelivery(
                workflow_id=refused.workflow_id,
                delivery_id=(refused.delivery_id or "")[:_DELIVERY_ID_MAX] or None,
                received_at=now,
                outcome=DeliveryOutcome.REFUSED,
                status_code=refused.error.http_status,
                reason=refused.reason,
            )
        )
        session.flush()
        _prune_refusals(session, refused.workflow_id)


def _prune_refusals(session: Session, workflow_id: str) -> None:
    keep = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.workflow_id == workflow_id,
            WebhookDelivery.outcome == DeliveryOutcome.REFUSED,
        )
        .order_by(WebhookDelivery.received_at.desc(), WebhookDelivery.id.desc())
        .limit(KEPT_REFUSALS)
    )
    kept = set(session.execute(keep).scalars())
    if len(kept) < KEPT_REFUSALS:
        return
    session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.workflow_id == workflow_id,
            WebhookDelivery.outcome == DeliveryOutcome.REFUSED,
            WebhookDelivery.id.not_in(kept),
        )
    )


def prune_accepted(session: Session, now: dt.datetime) -> int:
    """Accepted and duplicate deliveries older than a day are forgotten (their timestamps are
    long out of tolerance, so a replay is refused anyway)."""
    result = session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.outcome != DeliveryOutcome.REFUSED,
            WebhookDelivery.received_at < now - KEPT_ACCEPTED,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)

"""What the console's area modules share: the app's state (database, queue, keyring), an action
performed in one transaction with its outcome as a message on the next page, query strings for
filters and pages, form values read as the API reads them, and API paths as console paths.

A POST view is: `return perform(request, back, lambda session: service.fn(session, actor, …))`
— the service function the API route calls, with the signed-in actor. A `GrantflowError` it
raises is shown in words (message, next action, the fields it names) on the page it goes back
to; a `PermissionDenied` stays a 403 page.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from grantflow import audit
from grantflow.api.state import AppState, state_of
from grantflow.console import cookies
from grantflow.console.templating import redirect, safe_next
from grantflow.errors import GrantflowError, PermissionDenied, ValidationError
from grantflow.store.database import Database

API_PREFIX = "/api/v1"  # (the API's links: the console shows the same objects without it)
M = TypeVar("M", bound=BaseModel)
_FLASH_LIMIT = 900  # characters of one message: the flash cookie stays well under 4 KB


def services(request: Request) -> AppState:
    """The app's state: settings, database, queue, keyring, connections."""
    return state_of(request)


def database(request: Request) -> Database:
    return state_of(request).database


def error_words(error: GrantflowError) -> str:
    """An error as one paragraph: its message, the fields it names, and the next action."""
    text = _sentence(error.message)
    named = [
        f"{d.get('field') or d.get('step') or ''}: {d.get('message', '')}".lstrip(": ")
        for d in error.details[:5]
        if isinstance(d, dict)
    ]
    if named and len(error.details) > 1:
        text += " " + "; ".join(named) + ("; …" if len(error.details) > 5 else "") + "."
    if error.next_action:
        text += f" Next: {error.next_action}"
    return text if len(text) <= _FLASH_LIMIT else text[: _FLASH_LIMIT - 1] + "…"


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


Outcome = str | None | tuple[str, str]  # a message, or (message, the page to go on to)


def perform(request: Request, back: str, work: Callable[[Session], Outcome]) -> Response:
    """Do `work` in one transaction and go on (to `back`, or the page it names) with the
    message it returns; on a refusal, nothing is kept and `back` shows the error in words."""
    try:
        with database(request).transaction() as session:
            outcome = work(session)
    except PermissionDenied as error:
        refused(request, error)
    except GrantflowError as error:
        cookies.flash(request, "error", error_words(error))
        return redirect(request, back)
    if isinstance(outcome, tuple):
        message, then = outcome
        return redirect(request, then, message=message)
    return redirect(request, back, message=outcome)


def refused(request: Request, error: PermissionDenied) -> NoReturn:
    """A refusal by the service function itself (not the page's guard): a 403 page, audited
    as the guard's refusals are (e.g. revoking someone else's token, deciding one's own
    access review item)."""
    viewer = getattr(request.state, "viewer", None)
    if viewer is None:
        raise error
    with database(request).transaction() as session:
        audit.record(
            session,
            viewer.actor,
            "console.forbidden",
            "console_page",
            request.url.path,
            {"method": request.method, "reason": error.message},
        )
    raise error


def back_to(target: str | None, default: str) -> str:
    """Where a form asks to go back to (a path on this site only), else `default`."""
    return safe_next(target, default)


def query(request: Request, **changes: Any) -> str:
    """This page's query string with `changes` (None removes a key), e.g. for the next page."""
    params = {k: v for k, v in request.query_params.items() if v != ""}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return f"?{urlencode(params)}" if params else ""


def next_page(request: Request, cursor: str | None) -> str | None:
    """The link to the next page of a list (None on the last page)."""
    return f"{request.url.path}{query(request, cursor=cursor)}" if cursor else None


def console_path(api_path: str | None) -> str | None:
    """An API path (`/api/v1/runs/…`) as the console path of the same object or action."""
    if not api_path:
        return None
    return api_path[len(API_PREFIX) :] if api_path.startswith(API_PREFIX + "/") else api_path


def parse_time(value: str, field: str) -> dt.datetime | None:
    """A date-time field (`YYYY-MM-DDTHH:MM`, read as UTC; empty: none) or a 422 naming it."""
    value = value.strip()
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{field}: {value!r} is not a date and time",
            details=[{"field": field, "message": "use YYYY-MM-DD HH:MM (UTC)"}],
            next_action="enter a date and time such as 2030-01-31 17:00",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parse_json_object(value: str, field: str) -> dict[str, Any]:
    """A JSON object typed into a text area (empty: {}), or a 422 naming the field."""
    value = value.strip()
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ValidationError(
            f"{field}: not valid JSON ({exc})",
            details=[{"field": field, "message": f"not valid JSON: {exc}"}],
            next_action='write a JSON object, e.g. {"email": "ada@example.com"}',
        ) from None
    if not isinstance(parsed, dict):
        raise ValidationError(
            f"{field}: must be a JSON object",
            details=[{"field": field, "message": "must be a JSON object { … }"}],
            next_action='write a JSON object, e.g. {"email": "ada@example.com"}',
        )
    return parsed


def form_model(model: type[M], **values: Any) -> M:
    """The API's body model built from form fields; a wrong field is a 422 naming it."""
    try:
        return model.model_validate(values)
    except PydanticError as exc:
        details = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "form",
                "message": err["msg"],
            }
            for err in exc.errors(include_input=False)
        ]
        raise ValidationError(
            "some fields are not valid: "
            + "; ".join(f"{d['field']}: {d['message']}" for d in details),
            details=details,
            next_action="correct the fields named and submit again",
        ) from None


E = TypeVar("E", bound=enum.Enum)


def choice(value: str, options: type[E], field: str) -> E | None:
    """A filter chosen in a <select> ("": any), or a 422 naming the filter and its options."""
    if not value:
        return None
    try:
        return options(value)
    except ValueError:
        allowed = ", ".join(str(o.value) for o in options)
        raise ValidationError(
            f"{field}: {value!r} is not one of {allowed}",
            details=[{"field": f"query.{field}", "message": f"one of {allowed}"}],
        ) from None


def yes_no(value: str, field: str) -> bool | None:
    """A yes / no filter ("": either), or a 422 naming it."""
    if value in ("", "any"):
        return None
    if value in ("true", "false"):
        return value == "true"
    raise ValidationError(
        f"{field}: {value!r} is not true or false",
        details=[{"field": f"query.{field}", "message": "true or false"}],
    )

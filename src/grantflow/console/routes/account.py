"""/account/sessions: my console sessions; sign out one, or everywhere."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from grantflow.auth import sessions
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console import cookies
from grantflow.console.guard import Page, Viewer
from grantflow.console.state import console_state
from grantflow.console.templating import redirect, render

router = APIRouter(include_in_schema=False)


def _rows(request: Request, actor: Actor) -> list[dict[str, object]]:
    viewer: Viewer = request.state.viewer
    with console_state(request).database.transaction() as session:
        return [
            {
                "id": row.id,
                "method": row.method,
                "created_at": row.created_at,
                "last_seen_at": row.last_seen_at,
                "expires_at": row.expires_at,
                "user_agent": row.user_agent or "—",
                "address": row.address or "—",
                "current": row.id == viewer.session_id,
            }
            for row in sessions.list_sessions(session, actor.user_id or "")
        ]


@router.get("/account/sessions")
def my_sessions(request: Request, actor: Actor = Depends(Page(Permission.SELF))) -> Response:
    """Where I am signed in."""
    return render(request, "sessions.html", {"sessions": _rows(request, actor)})


@router.post("/account/sessions/{session_id}/end")
def end_one(
    session_id: str, request: Request, actor: Actor = Depends(Page(Permission.SELF))
) -> Response:
    """Sign one of my sessions out (this one: back to the login page)."""
    viewer: Viewer = request.state.viewer
    with console_state(request).database.transaction() as session:
        sessions.end_session(session, actor, session_id)
    if session_id == viewer.session_id:
        response = redirect(request, "/login", message="You are signed out.")
        cookies.clear_cookie(request, response, cookies.SESSION)
        return response
    if request.headers.get("hx-request"):
        return render(request, "htmx/sessions_table.html", {"sessions": _rows(request, actor)})
    return redirect(request, "/account/sessions", message="That session is signed out.")


@router.post("/account/sessions/end-all")
def end_all(request: Request, actor: Actor = Depends(Page(Permission.SELF))) -> Response:
    """Sign out everywhere, this browser included."""
    with console_state(request).database.transaction() as session:
        count = sessions.end_all_sessions(session, actor, actor.user_id or "")
    response = redirect(
        request, "/login", message=f"Signed out everywhere ({count} session{'s' * (count != 1)})."
    )
    cookies.clear_cookie(request, response, cookies.SESSION)
    return response

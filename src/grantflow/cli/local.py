"""Local mode: the API app runs inside the CLI's own process, on the configured database.

`transport()` builds the app (`grantflow.api.create_app`, API routes only: no console, no SCIM
service, no worker, no scheduler) and sends each request to it as an ASGI call, with the acting
`Actor` in the request's scope under `ACTOR_SCOPE_KEY`, which the routes' `Require` guard
honours. Only this process can put it there; requests that arrive over the network never carry
it (a header cannot set a scope key).

Before anything else the database is checked: a missing SQLite file or a schema that is not
migrated ends the command with one line naming GRANTFLOW_DATABASE_URL and `grantflow migrate`.
"""

from __future__ import annotations

import contextlib
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote

import anyio
from anyio.from_thread import start_blocking_portal
from fastapi import FastAPI

from grantflow.api import create_app
from grantflow.api.security import ACTOR_SCOPE_KEY
from grantflow.auth.actor import Actor
from grantflow.auth.users import acting_as
from grantflow.cli.client import Response, Sink
from grantflow.cli.direct import open_checked
from grantflow.config import load_settings
from grantflow.errors import ConfigurationError
from grantflow.logging import configure_logging


class AsgiTransport:
    """Requests as ASGI calls into the app, on an event loop in a helper thread (the routes'
    blocking work runs in its thread pool, as under a server)."""

    where = "the local database"

    def __init__(self, app: FastAPI, actor: Actor | None, on_close: Any) -> None:
        self.app = app
        self.actor = actor
        self._on_close = on_close
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(start_blocking_portal())

    def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        into: Sink | None = None,
    ) -> Response:
        return self._portal.call(self._call, method, target, headers, body, into)

    async def _call(
        self, method: str, target: str, headers: dict[str, str], body: bytes, into: Sink | None
    ) -> Response:
        path, _, query = target.partition("?")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in {**headers, "content-length": str(len(body)), "host": "cli"}.items()
            ],
            "client": ("127.0.0.1", 0),
            "server": ("cli", 80),
        }
        if self.actor is not None and "authorization" not in headers:
            scope[ACTOR_SCOPE_KEY] = self.actor
        done = anyio.Event()
        sent_body = False
        status = 500
        response_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        sink_failed: BaseException | None = None

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, sink_failed
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    response_headers[key.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                if into is not None and 200 <= status < 300:
                    if sink_failed is None:  # (a download: not kept in memory)
                        try:
                            into.write(message.get("body", b""))
                        except Exception as exc:  # the sink's (a full disk), not the app's
                            sink_failed = exc
                            done.set()  # (the client "went away": the app stops streaming)
                else:
                    chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        except Exception:
            # the error handler answered 500 (and logged it) before the exception surfaced
            if not done.is_set():
                raise
        if sink_failed is not None:
            raise sink_failed
        return Response(status, response_headers, b"".join(chunks))

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self._on_close()


def transport(*, act_as: str | None) -> AsgiTransport:
    """The app on the configured database, acting as `system:cli`, or as the user `act_as`
    (an email) with exactly that user's permissions."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        exc.next_action = exc.next_action or "fix the variable (see `grantflow config show`)"
        raise
    configure_logging("warning", settings.log_format)
    db = open_checked(settings)
    try:
        actor = Actor.system("cli")
        if act_as:
            with db.transaction() as session:
                actor = acting_as(session, act_as)[1]
        app = create_app(settings, db, api_only=True)
    except BaseException:
        db.dispose()
        raise

    def close() -> None:
        app.state.grantflow.connections.http.close()
        app.state.grantflow.queue.close()
        db.dispose()

    return AsgiTransport(app, actor, close)

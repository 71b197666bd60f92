"""The sandbox's SCIM 2.0 server: the `scim2-server` library (RFC 7643 schemas and resource
types, the enterprise user extension, in-memory storage) served by the standard library's WSGI
server, behind one bearer token. Only the wiring is ours."""

from __future__ import annotations

from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from scim2_models import Group, UnauthorizedException
from scim2_server.applications.wsgi import WSGIApplication
from scim2_server.memory import InMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.utils import load_default_provider, load_default_resource_types


class _BearerApplication(WSGIApplication):
    """scim2-server's WSGI application, refusing requests without the sandbox token
    (the service provider configuration stays public, as RFC 7643 §5 has it)."""

    def __init__(self, storage: InMemoryStorage, token: str) -> None:
        super().__init__(storage, load_default_provider())
        self.token = token

    def check_auth(self, request: ScimRequest) -> None:
        scheme, _, given = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or given != self.token:
            raise UnauthorizedException


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args: Any) -> None:
        return


def make_server(host: str, port: int, token: str, groups: tuple[str, ...]) -> WSGIServer:
    """The SCIM server, bound (not yet serving), holding `groups` (empty)."""
    storage = InMemoryStorage()
    group_type = load_default_resource_types()["Group"]
    for name in groups:
        storage.create(group_type, Group(display_name=name))
    server = _ThreadingServer((host, port), _QuietHandler)
    server.set_app(_BearerApplication(storage, token))
    return server

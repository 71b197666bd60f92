"""The HTTP plumbing of the fake identity providers: routing by path prefix, the provider's
auth check, JSON bodies, and every request recorded."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str  # unquoted
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: Any
    raw: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, re.Match[str]], Response]


class Provider:
    """One provider: its path prefix, its auth rule, its routes and its error shape."""

    prefix = ""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(f"^{self.prefix}{pattern}$"), handler))

    def refuse(self, request: Request) -> Response | None:
        """The provider's answer to a request it does not accept (auth, shape), or None."""
        raise NotImplementedError

    def no_route(self, request: Request) -> Response:
        raise NotImplementedError

    def handle(self, request: Request) -> Response:
        refused = self.refuse(request)
        if refused is not None:
            return refused
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                with self.lock:
                    return handler(request, match)
        return self.no_route(request)


class ProviderServer:
    def __init__(self, *providers: Provider) -> None:
        self.providers = providers
        self.requests: list[Request] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def _answer(self, request: Request) -> Response:
        self.requests.append(request)
        for provider in self.providers:
            if request.path.startswith(provider.prefix + "/"):
                return provider.handle(request)
        return Response(404, {"message": "no provider under this path"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        answer = self._answer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                parts = urlsplit(self.path)
                request = Request(
                    self.command,
                    unquote(parts.path),
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    raw,
                )
                reply = answer(request)
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                if payload:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler


@contextmanager
def running_providers(*providers: Provider) -> Iterator[ProviderServer]:
    server = ProviderServer(*providers)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def json_body(request: Request) -> bool:
    """Whether the request sent a JSON object with a JSON content type."""
    content_type = request.headers.get("content-type", "")
    return content_type.startswith("application/json") and isinstance(request.body, dict)

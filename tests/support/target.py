"""A scripted HTTP server on 127.0.0.1 that plays an external system: per path, a sequence of
responses (the last one repeats), every request recorded with its idempotency key."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str -> text
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    hold: threading.Event | None = None  # answer only once this is set
    content_type: str | None = None  # instead of the one the body's type implies


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)  # arrival, on the monotonic clock

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


class Target:
    def __init__(self) -> None:
        self.script: dict[str, list[Reply]] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.arrived = threading.Condition(self.lock)
        # per path, a function that answers from the request (checks auth, echoes headers, ...)
        self.responders: dict[str, Callable[[Seen], Reply]] = {}
        self.active = 0  # requests being answered right now
        self.peak = 0  # the most answered at once

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def on(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.script[path] = list(replies)

    def respond(self, path: str, responder: Callable[[Seen], Reply]) -> None:
        """Answer requests to `path` with `responder(request)` instead of a script."""
        with self.lock:
            self.responders[path] = responder

    def calls(self, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path.split("?")[0] == path]

    def per_key(self) -> Counter[str | None]:
        return Counter(r.idempotency_key for r in self.calls())

    def wait_for_calls(self, path: str, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len([r for r in self.requests if r.path.split("?")[0] == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path} got fewer than {count} calls")
                self.arrived.wait(left)

    def _next(self, path: str, seen: Seen | None = None) -> Reply:
        with self.lock:
            responder = self.responders.get(path.split("?")[0])
        if responder is not None and seen is not None:
            return responder(seen)
        with self.lock:
            replies = self.script.get(path.split("?")[0])
            if not replies:
                return Reply(404, {"error": "no such path"})
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: with Nagle on, the body waits ~40 ms for the
            # client's delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *_args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                seen = Seen(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with target.arrived:
                    target.requests.append(seen)
                    target.active += 1
                    target.peak = max(target.peak, target.active)
                    target.arrived.notify_all()
                reply = target._next(self.path, seen)
                if reply.hold is not None:
                    reply.hold.wait(30)
                if reply.delay:
                    time.sleep(reply.delay)
                with target.lock:  # done before the caller can see the answer
                    target.active -= 1
                payload = b""
                content_type = "application/json"
                if isinstance(reply.body, str):
                    payload, content_type = reply.body.encode(), "text/plain"
                elif reply.body is not None:
                    payload = json.dumps(reply.body).encode()
                content_type = reply.content_type or content_type
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        return Handler


@contextmanager
def running_target(host: str = "127.0.0.1", port: int = 0) -> Iterator[Target]:
    """A scripted server; `port` lets a test bring a system back up where it was down."""
    target = Target()
    server = ThreadingHTTPServer((host, port), target.handler())
    server.daemon_threads = True
    target.server = server
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()

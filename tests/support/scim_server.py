"""A real `scim2-server` process on 127.0.0.1 (in memory, dynamic tenants: each test its own
`/<tenant>/v2`), and a scim2-client to look at what it holds."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import ListResponse, SearchRequest

from tests.support.services import free_port

TOKEN = "scim-test-token-5f1c"


@dataclass
class ScimServer:
    url: str  # http://127.0.0.1:<port>
    process: subprocess.Popen[bytes]

    def tenant(self) -> Tenant:
        """A fresh tenant (created by the server on first use)."""
        return Tenant(f"{self.url}/t{uuid.uuid4().hex[:12]}/v2")


@dataclass
class Tenant:
    """One tenant's SCIM root, and a client that reads and seeds what it holds."""

    url: str

    def client(self, token: str = TOKEN) -> SyncSCIMClient:
        http = httpx2.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        client = SyncSCIMClient(http)
        client.discover()
        return client

    def users(self, **filters: str) -> list[Any]:
        return self._search("User", filters)

    def groups(self, **filters: str) -> list[Any]:
        return self._search("Group", filters)

    def _search(self, kind: str, filters: dict[str, str]) -> list[Any]:
        client = self.client()
        model = client.get_resource_model(kind)
        assert model is not None
        expression = " and ".join(f'{k} eq "{v}"' for k, v in filters.items()) or None
        found = client.query(model, query_parameters=SearchRequest(filter=expression))
        client.client.close()
        assert isinstance(found, ListResponse)
        return list(found.resources or [])

    def create(self, kind: str, payload: dict[str, Any]) -> Any:
        """Seed a resource directly (an account that exists before the workflow runs)."""
        client = self.client()
        model = client.get_resource_model(kind)
        assert model is not None
        created = client.create(model, payload)
        client.client.close()
        return created

    def members(self, group_name: str) -> set[str]:
        (group,) = self.groups(displayName=group_name)
        return {m.value for m in group.members or []}


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"scim2-server exited with {process.returncode}")
    try:
        return httpx2.get(f"{url}/ready/v2/ServiceProviderConfig", timeout=1).status_code == 200
    except httpx2.TransportError:
        return False


@contextlib.contextmanager
def running_scim_server(timeout: float = 60) -> Iterator[ScimServer]:
    """Start `scim2-server` on a free port of 127.0.0.1 and wait until it answers."""
    port = free_port()
    command = str(Path(sys.executable).parent / "scim2-server")
    process = subprocess.Popen(
        [
            command,
            "--hostname",
            "127.0.0.1",
            "--port",
            str(port),
            "--bearer-token",
            TOKEN,
            "--dynamic-tenants",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _ready(url, process):
            if time.monotonic() > deadline:
                raise AssertionError(f"scim2-server did not answer on {url} within {timeout}s")
            time.sleep(0.05)
        yield ScimServer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def token_gateway(
    tenant: Tenant, accepts: Callable[[str], bool], refusal: int = 401
) -> Iterator[str]:
    """A SCIM root on 127.0.0.1 that lets through only bearer tokens `accepts` (answering a
    SCIM `refusal`, 401 or 403, otherwise) and forwards the rest to `tenant` with the server's
    own token: a SCIM service behind an OAuth resource server. Yields its SCIM root URL."""
    upstream = httpx2.Client(timeout=10)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            return

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            token = self.headers.get("authorization", "").removeprefix("Bearer ")
            if accepts(token):
                answer = upstream.request(
                    self.command,
                    tenant.url + self.path.removeprefix("/v2"),
                    content=body,
                    headers={
                        "Authorization": f"Bearer {TOKEN}",
                        "Content-Type": self.headers.get("content-type", "application/scim+json"),
                    },
                )
                status, payload = answer.status_code, answer.content
            else:
                status, payload = (
                    refusal,
                    (
                        b'{"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], '
                        b'"status": "%d", "detail": "invalid_token"}' % refusal
                    ),
                )
            self.send_response(status)
            self.send_header("Content-Type", "application/scim+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2"
    finally:
        server.shutdown()
        server.server_close()
        upstream.close()

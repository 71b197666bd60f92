"""Connections through the real API, and workflows whose http steps use them."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from grantflow.api import create_app
from grantflow.config import Settings, load_settings
from grantflow.connections.crypto import keyring_for
from grantflow.connections.outbound import OutboundPolicy
from grantflow.engine.worker import Worker
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import running_worker
from tests.support.server import serve_in_thread

API = "/api/v1"


def allowing_loopback(database: Database, tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings whose outbound guard lets the app reach the tests' servers on 127.0.0.1."""
    values: dict[str, Any] = {
        "database_url": database.url.render_as_string(hide_password=False),
        "secret_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "secret_key_file": tmp_path / "unused.key",
        "outbound_allow": "127.0.0.1",
    }
    values.update(overrides)
    return load_settings(**values)


@contextmanager
def serving_api(settings: Settings, database: Database) -> Iterator[Api]:
    """The real app over HTTP (like the `api` fixture), closing the app's own outbound client
    afterwards: Test connection leaves keep-alive sockets to the tests' servers in it."""
    app = create_app(settings, database)
    try:
        with serve_in_thread(app) as url:
            yield Api(base_url=url, database=database)
    finally:
        app.state.grantflow.connections.http.close()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


def make_application(admin: httpx.Client, name: str = "Acme CRM") -> str:
    return str(ok(admin.post(f"{API}/applications", json={"name": name}), 201)["id"])


def make_connection(
    admin: httpx.Client, application_id: str, base_url: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": "crm", "base_url": base_url, **fields}
    created: dict[str, Any] = ok(
        admin.post(f"{API}/applications/{application_id}/connections", json=body), 201
    )
    return created


def put_credential(admin: httpx.Client, connection_id: str, secret: dict[str, Any]) -> Any:
    return ok(admin.put(f"{API}/connections/{connection_id}/credential", json=secret))


def http_workflow(
    name: str,
    application_id: str,
    *,
    connection: str = "crm",
    path: str = "/resource",
    method: str = "GET",
    retry: dict[str, Any] | None = None,
    steps: int = 1,
) -> dict[str, Any]:
    """A manual workflow of `steps` http steps calling `path` through the connection."""
    chain = []
    for n in range(steps):
        step: dict[str, Any] = {
            "id": f"call_{n}",
            "type": "http",
            "config": {"method": method, "connection": connection, "path": path},
        }
        if retry:
            step["retry"] = retry
        if n + 1 < steps:
            step["next"] = f"call_{n + 1}"
        chain.append(step)
    return {
        "name": name,
        "application": application_id,
        "trigger": {"type": "manual"},
        "steps": chain,
    }


FAST_RETRY = {"max_attempts": 3, "initial_backoff": "PT0.05S", "jitter": "none"}


@contextmanager
def connection_worker(settings: Settings, database: Database, **options: Any) -> Iterator[Worker]:
    """A worker with the app's master key, allowed to reach 127.0.0.1."""
    options.setdefault("keyring", keyring_for(settings))
    options.setdefault("outbound", OutboundPolicy.parse(["127.0.0.1"]))
    with running_worker(database, **options) as worker:
        yield worker

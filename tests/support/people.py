"""People in the loop over HTTP: users with tokens, workflows published through the API, runs
started by a user, and their inbox, tasks and notifications — as a client sees them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx

from grantflow.auth.permissions import Role
from tests.conftest import Api

API = "/api/v1"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


@contextmanager
def people(api: Api, **roles: Role | tuple[Role, ...]) -> Iterator[dict[str, httpx.Client]]:
    """Users named by their local part (`alice=Role.APPROVER` is alice@example.com), each
    with a client holding their own token."""
    with ExitStack() as stack:
        clients = {}
        for name, held in roles.items():
            held = held if isinstance(held, tuple) else (held,)
            token = api.user_token(f"{name}@example.com", *held)
            clients[name] = stack.enter_context(api.client(token))
        yield clients


def email(name: str) -> str:
    return f"{name}@example.com"


def chain(name: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A manual workflow running `steps` in order."""
    chained = [dict(s) for s in steps]
    for step, following in itertools.pairwise(chained):
        step.setdefault("next", following["id"])
    return {"name": name, "trigger": {"type": "manual"}, "steps": chained, **extra}


def approval(step_id: str = "approve", **config: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "approval", "config": {"title": "Grant access?", **config}}


def task(step_id: str, **config: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "task", "config": config}


def set_step(step_id: str, **values: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": values or {"done": True}}}


def create(admin: httpx.Client, document: dict[str, Any]) -> dict[str, Any]:
    """POST the document as a new workflow (draft version 1)."""
    created: dict[str, Any] = ok(admin.post(f"{API}/workflows", json=document), 201)
    return created


def publish(admin: httpx.Client, document: dict[str, Any]) -> str:
    """Create and publish a workflow through the API (the publish gate runs); its id."""
    created = create(admin, document)
    wf_id: str = created["workflow"]["id"]
    number = created["version"]["number"]
    ok(admin.post(f"{API}/workflows/{wf_id}/versions/{number}/publish"))
    return wf_id


def start(client: httpx.Client, workflow_id: str, run_input: dict[str, Any] | None = None) -> str:
    """Start a run as the client's user (the run's requester); its id."""
    shown = ok(
        client.post(f"{API}/workflows/{workflow_id}/runs", json={"input": run_input or {}}), 201
    )
    return str(shown["id"])


def run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = ok(client.get(f"{API}/runs/{run_id}"))
    return shown


def poll(
    read: Callable[[], Any], until: Callable[[Any], bool], *, timeout: float, what: str
) -> Any:
    """Read until `until(value)` holds; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value}")
        time.sleep(0.02)


def wait_run(
    client: httpx.Client,
    run_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
    what: str = "the run",
) -> dict[str, Any]:
    shown: dict[str, Any] = poll(lambda: run(client, run_id), until, timeout=timeout, what=what)
    return shown


def wait_status(client: httpx.Client, run_id: str, *statuses: str) -> dict[str, Any]:
    return wait_run(client, run_id, lambda r: r["status"] in statuses, what=f"status {statuses}")


def waiting_task(client: httpx.Client, run_id: str, reason: str | None = None) -> dict[str, Any]:
    """The run once it waits on a person; its `waiting_for` (who, the task id, any problem)."""
    shown = wait_run(
        client,
        run_id,
        lambda r: (
            r["status"] == "waiting"
            and r["waiting_for"] is not None
            and (reason is None or r["waiting_reason"] == reason)
        ),
        what="the run to wait on a person",
    )
    waiting: dict[str, Any] = shown["waiting_for"]
    return waiting


def inbox(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(client.get(f"{API}/inbox", params=params))["items"]
    return items


def act(
    client: httpx.Client,
    task_id: str,
    action: str,
    comment: str | None = None,
    data: dict[str, Any] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {}
    if comment is not None:
        body["comment"] = comment
    if data is not None:
        body["data"] = data
    return client.post(f"{API}/tasks/{task_id}/{action}", json=body)


def get_task(client: httpx.Client, task_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = ok(client.get(f"{API}/tasks/{task_id}"))
    return shown


def notifications(client: httpx.Client, **params: Any) -> dict[str, Any]:
    shown: dict[str, Any] = ok(client.get(f"{API}/notifications", params=params))
    return shown


def audit(admin: httpx.Client, action: str, target_id: str) -> list[dict[str, Any]]:
    page = ok(admin.get(f"{API}/audit", params={"action": action, "target_id": target_id}))
    items: list[dict[str, Any]] = page["items"]
    return items

"""The third-party SCIM checker (scim2-tester) against a real `grantflow serve` on SQLite.

The checker discovers the service (ServiceProviderConfig, ResourceTypes, Schemas), then creates,
reads, lists, searches, replaces, patches (add / replace / remove of every attribute of User,
the enterprise extension and Group) and deletes resources, and probes error handling. Every
check must come back SUCCESS (or COMPLIANT): none may be skipped, acceptable or worse.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import CheckResult, Status, check_server

from tests.support.processes import (
    ServedProcess,
    grantflow_env,
    json_output,
    run_grantflow,
    serving,
)

pytestmark = pytest.mark.acceptance

# scim2-tester 0.5.2 runs 135 checks on a service with users (enterprise extension) and groups
MIN_CHECKS = 135
PASSING = {Status.SUCCESS, Status.COMPLIANT}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedProcess, str]]:
    """`grantflow serve` on a fresh SQLite database, and a token from
    `grantflow tokens create --scope scim --json`."""
    workdir: Path = tmp_path_factory.mktemp("scim-compliance")
    env = grantflow_env(
        database_url=f"sqlite:///{workdir / 'grantflow.db'}",
        secret_key_file=workdir / "secret.key",
    )
    with serving(env, workdir) as server:
        created = json_output(
            run_grantflow("tokens", "create", "--scope", "scim", "--json", env=env, cwd=workdir)
        )
        assert created["scope"] == "scim"
        yield server, created["token"]


def _describe(results: list[CheckResult]) -> str:
    return "\n".join(
        f"{r.status.name} {r.resource_type or ''} {r.title}: {r.reason}"
        for r in results
        if r.status not in PASSING
    )


def test_scim2_tester_finds_no_deviation(served: tuple[ServedProcess, str]) -> None:
    """Every scim2-tester check passes: N checks, N SUCCESS (COMPLIANT would also pass)."""
    server, token = served
    http = httpx2.Client(
        base_url=f"{server.url}/scim/v2",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    with http:
        client = SyncSCIMClient(http)
        client.discover()
        results = check_server(client)

    counts = collections.Counter(r.status.name for r in results)
    assert set(counts) <= {s.name for s in PASSING}, _describe(results)
    assert sum(counts.values()) >= MIN_CHECKS, counts
    # discovery, then the CRUD and PATCH checks of both resource types all ran
    assert {r.resource_type for r in results if r.resource_type} == {"User", "Group"}
    by_type = collections.Counter(r.resource_type for r in results if r.resource_type)
    assert by_type["User"] > by_type["Group"] > 10, by_type
    assert "Traceback" not in server.stderr()

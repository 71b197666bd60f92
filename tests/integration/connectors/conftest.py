"""Fixtures for the connector tests: one scim2-server process for the session (each test gets
its own tenant), the fake identity providers (Graph, Okta, Google) on one local server, a
keyring for credentials, and the workflow's application."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from grantflow.connections.crypto import Keyring
from grantflow.store.database import Database
from tests.support.idp.google import Google
from tests.support.idp.graph import Graph
from tests.support.idp.okta import Okta
from tests.support.idp.server import ProviderServer, running_providers
from tests.support.provisioning import EXAMPLE_TOKENS, fresh_keyring, make_application
from tests.support.scim_server import ScimServer, Tenant, running_scim_server

GRAPH_TOKEN = EXAMPLE_TOKENS["entra"]
OKTA_TOKEN = EXAMPLE_TOKENS["okta"]
GOOGLE_TOKEN = EXAMPLE_TOKENS["google"]


@pytest.fixture(scope="session")
def scim_server() -> Iterator[ScimServer]:
    with running_scim_server() as server:
        yield server


@pytest.fixture
def tenant(scim_server: ScimServer) -> Tenant:
    """A fresh, empty tenant of the SCIM server."""
    return scim_server.tenant()


@pytest.fixture
def keyring() -> Keyring:
    return fresh_keyring()


@pytest.fixture
def application_id(database: Database) -> str:
    return make_application(database, "Acme directory")


@pytest.fixture
def graph() -> Graph:
    return Graph(GRAPH_TOKEN)


@pytest.fixture
def okta() -> Okta:
    return Okta(OKTA_TOKEN)


@pytest.fixture
def google() -> Google:
    return Google(GOOGLE_TOKEN)


@pytest.fixture
def providers(graph: Graph, okta: Okta, google: Google) -> Iterator[ProviderServer]:
    with running_providers(graph, okta, google) as server:
        yield server

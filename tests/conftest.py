"""Fixtures: every database test runs on SQLite and on PostgreSQL; API tests go over real HTTP."""

from __future__ import annotations

import base64
import gc
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from grantflow.api import create_app
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import create_user
from grantflow.config import Settings, load_settings
from grantflow.connections.outbound import tls_context
from grantflow.store.database import Database
from tests.support.databases import PostgresRun, sqlite_copy, sqlite_template
from tests.support.server import serve_in_thread

BACKENDS = [
    b for b in os.environ.get("GRANTFLOW_TEST_DATABASES", "sqlite,postgresql").split(",") if b
]


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sqlite_template(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def _postgres_run() -> Iterator[PostgresRun]:
    run = PostgresRun()
    run.create()
    yield run
    run.drop()


def pytest_configure(config: pytest.Config) -> None:
    """A machine may set PYTHONDONTWRITEBYTECODE (container images often do). Then each process
    the suite starts (every xdist worker, every grantflow server, worker and command) compiles
    Grantflow again and rewrites the asserts of every test module again: 6 of a worker's 11 s
    of CPU to collect the tests, and 0.3-0.4 s for each process that imports Grantflow. The
    suite writes bytecode to __pycache__ (ignored by git); the processes it starts inherit
    this."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False


def pytest_collection_finish(session: pytest.Session) -> None:
    """The suite's processes collect cyclic garbage less often: a test allocates a great deal
    that reference counting frees anyway, and the collector's frequent young passes were a
    sixth of the suite's CPU (`pytest tests/integration/test_engine_semantics.py
    tests/integration/test_checkpoints.py`: 21.5-22.5 s of CPU, 17.6-17.7 s with this). What
    was loaded to collect the tests lives for the session: kept out of full passes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of the `database` fixture runs on each backend. A module marked `transports`
    runs each test on every database with the database transport, and on PostgreSQL with the
    Valkey/Redis transport too (ids `sqlite`, `postgresql`, `postgresql-redis`)."""
    if "database" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if "database" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return  # (the test chose its databases itself)
    each_transport = metafunc.definition.get_closest_marker("transports") is not None
    combos = [(b, "database") for b in BACKENDS]
    if each_transport and "postgresql" in BACKENDS:
        combos.append(("postgresql", "redis"))
    params = []
    for backend, kind in combos:
        marks = [pytest.mark.postgres] if backend == "postgresql" else []
        if kind == "redis":
            marks.append(pytest.mark.redis)
        values = (backend, kind) if each_transport else (backend,)
        shown = backend if kind == "database" else f"{backend}-{kind}"
        params.append(pytest.param(*values, id=shown, marks=marks))
    names = ("database", "transport") if each_transport else "database"
    metafunc.parametrize(names, params, indirect=True)


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """The queue transport of the engine under test (tests/support/engine.py): "database", or
    "redis" on the local Redis with a key prefix of this test's own, deleted afterwards."""
    kind = getattr(request, "param", "database")
    if kind != "redis":
        yield kind
        return
    import uuid

    import redis

    from tests.support import engine
    from tests.support.services import REDIS_URL, service_missing

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        service_missing("Redis", str(exc))
    prefix = f"grantflow-test:{uuid.uuid4().hex[:12]}"
    engine.use_transport(REDIS_URL, prefix)
    try:
        yield kind
    finally:
        engine.use_transport(None)
        for key in client.scan_iter(match=prefix + ":*"):
            client.delete(key)
        client.close()


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database of each backend, keyed (its audit chain) by a master key of
    this test's own, which the `settings` fixture configures too."""
    if request.param == "sqlite":
        db = sqlite_copy(request.getfixturevalue("_sqlite_template"), tmp_path)
    else:
        db = request.getfixturevalue("_postgres_run").fresh()
    key = os.urandom(32)
    db.use_master_keys(lambda: [key])
    yield db
    db.dispose()


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=database.url.render_as_string(hide_password=False),
        secret_key=base64.urlsafe_b64encode(database.master_keys()[0]).decode(),
        secret_key_file=tmp_path / "unused.key",
    )


@dataclass
class Api:
    """An HTTP client for the running app plus ways to make authorised users."""

    base_url: str
    database: Database

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # a generous timeout: a loaded machine answers late, not wrongly; the shared TLS
        # context spares the 20 ms that building one costs every client
        return httpx.Client(
            base_url=self.base_url, headers=headers, timeout=60, verify=tls_context()
        )

    def user_token(self, email: str, *roles: Role, ttl_days: int | None = 30) -> str:
        actor = Actor.system("test")
        with self.database.transaction() as session:
            user = create_user(session, actor, email=email, roles=list(roles))
            _, raw = create_token(session, actor, user_id=user.id, name="test", ttl_days=ttl_days)
        return raw

    def as_role(self, role: Role, email: str | None = None) -> httpx.Client:
        return self.client(self.user_token(email or f"{role}@example.com", role))


@pytest.fixture
def api(settings: Settings, database: Database) -> Iterator[Api]:
    """The real app on a free port of 127.0.0.1."""
    with serve_in_thread(create_app(settings, database)) as url:
        yield Api(base_url=url, database=database)


@pytest.fixture
def admin(api: Api) -> Iterator[httpx.Client]:
    with api.as_role(Role.ADMIN, "admin@example.com") as client:
        yield client


@pytest.fixture
def redis_keys() -> Iterator[tuple[object, str]]:
    """A client of the local Redis and a key prefix of this test's own; its keys are deleted
    afterwards. Missing Redis: skipped locally, a failure with CI=true."""
    import uuid

    import redis

    from tests.support.services import REDIS_URL, service_missing

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        service_missing("Redis", str(exc))
    prefix = f"grantflow-test:{uuid.uuid4().hex[:12]}:"
    yield client, prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()

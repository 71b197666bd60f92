"""Reaching the local PostgreSQL and Redis: skip when absent locally, fail when CI=true."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "GRANTFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("GRANTFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_missing(name: str, reason: str) -> NoReturn:
    """In CI a missing service fails the run; on a laptop the tests that need it are skipped."""
    message = f"{name} is not reachable ({reason})"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

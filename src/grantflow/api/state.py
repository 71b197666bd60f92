"""What the app carries: settings, the database, the metrics registry."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from prometheus_client import CollectorRegistry

from grantflow.config import Settings
from grantflow.connections.access import ConnectionAccess
from grantflow.connections.crypto import Keyring
from grantflow.queue.interface import Queue
from grantflow.store.database import Database


@dataclass
class AppState:
    settings: Settings
    database: Database
    registry: CollectorRegistry
    queue: Queue
    keyring: Keyring
    connections: ConnectionAccess


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.grantflow
    return state


# The dependencies are `async`: they only read the app's state, and FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop per dependency on every request.
async def app_state(request: Request) -> AppState:
    return state_of(request)


async def database(request: Request) -> Database:
    return state_of(request).database


async def queue(request: Request) -> Queue:
    return state_of(request).queue

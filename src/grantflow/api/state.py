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


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.grantflow
    return state


def database(request: Request) -> Database:
    return app_state(request).database


def queue(request: Request) -> Queue:
    return app_state(request).queue

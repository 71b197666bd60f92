"""`/metrics` of a `grantflow worker` process, which serves no API: its own step and run series
and the queue gauges, on a port of its own (`grantflow worker --metrics-port`).

The API's `/metrics` reports the workers embedded in `grantflow serve`; a separate worker's
step outcomes and run durations live only in its own process, so it must be scraped itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from grantflow.engine.metrics import REGISTRY
from grantflow.errors import ConfigurationError
from grantflow.queue.interface import Queue
from grantflow.queue.metrics import QueueCollector


class _Engine(Collector):
    """The engine's series (one registry per process, shared with an embedded API)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class MetricsServer:
    """A small HTTP server in a daemon thread answering GET /metrics (any path, as
    prometheus_client's own server does)."""

    def __init__(self, queue: Queue, address: str, port: int) -> None:
        registry = CollectorRegistry()
        registry.register(_Engine())
        registry.register(QueueCollector(queue))
        try:
            server, thread = start_http_server(port, address, registry)
        except OSError as exc:
            raise ConfigurationError(
                f"--metrics-port: cannot listen on {address}:{port}: {exc.strerror or exc}",
                next_action="choose a free port (or another --metrics-address)",
            ) from None
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.port: int = server.server_address[1]
        self.address = address

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

"""`grantflow worker`: a worker process. Its own module, importing only what a worker uses,
so that an idle worker holds none of the API, the console, the scheduler or the demo."""

from __future__ import annotations

import contextlib

import structlog
import typer

from grantflow.cli.context import errors_as_lines
from grantflow.cli.direct import database, settings
from grantflow.connections.crypto import keyring_for
from grantflow.connections.outbound import policy_for
from grantflow.engine.worker import Worker
from grantflow.queue.transports import open_queue

log = structlog.get_logger("grantflow.cli")


def worker(
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=256),
    poll_seconds: float = typer.Option(
        1.0,
        "--poll-seconds",
        min=0.01,
        help="how often to look for work that no wake-up announced (SQLite across processes)",
    ),
    lease_seconds: float = typer.Option(
        30.0, "--lease-seconds", min=1.0, help="how long a dead worker's runs stay held"
    ),
    metrics_port: int = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        envvar="GRANTFLOW_WORKER_METRICS_PORT",
        help="serve this worker's Prometheus metrics (its steps and runs, the queue) on this "
        "port at /metrics; off when not given",
    ),
    metrics_address: str = typer.Option(
        "127.0.0.1",
        "--metrics-address",
        envvar="GRANTFLOW_WORKER_METRICS_ADDRESS",
        help="the address the metrics port listens on (0.0.0.0: every interface)",
    ),
) -> None:
    """Run a worker process: it advances runs until SIGTERM, then finishes or hands back."""
    from grantflow.definitions import sandbox
    from grantflow.safety import config as safety_config

    loaded = settings(log_level=None)
    sandbox.configure(loaded)  # the template limits this worker enforces
    safety_config.configure(loaded)  # its breakers' defaults, the spend-cap timezone
    with errors_as_lines(), database(loaded) as db, contextlib.ExitStack() as stack:
        queue = open_queue(db, loaded.queue_url, prefix=loaded.queue_prefix)
        if metrics_port is not None:
            from grantflow.engine.metrics_http import MetricsServer

            served = MetricsServer(queue, metrics_address, metrics_port)
            stack.callback(served.close)
            log.info("worker.metrics", address=served.address, port=served.port)
        Worker(
            db,
            queue,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            poll_seconds=poll_seconds,
            keyring=keyring_for(loaded),
            outbound=policy_for(loaded.outbound_allow),
            health_check_seconds=loaded.health_check_seconds or None,
        ).run_until_signalled()
        queue.close()

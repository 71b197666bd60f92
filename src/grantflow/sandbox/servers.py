"""Starting and stopping the sandbox's two servers, each on a daemon thread of the serving
process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from grantflow.errors import ConfigurationError
from grantflow.sandbox import HOST, SCIM_GROUPS, saas_url, sandbox_token, scim_url

if TYPE_CHECKING:
    from socketserver import BaseServer

    from grantflow.config import Settings
    from grantflow.sandbox.saas import Holdings

log = structlog.get_logger("grantflow.sandbox")


@dataclass
class Sandbox:
    saas_url: str
    scim_url: str
    holdings: Holdings
    servers: list[BaseServer] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)
        self.servers.clear()
        self.threads.clear()


def _bind(make: Callable[[], BaseServer], variable: str, port: int) -> BaseServer:
    try:
        return make()
    except OSError as exc:
        raise ConfigurationError(
            f"the sandbox cannot listen on {HOST}:{port}: {exc.strerror or exc}",
            next_action=f"stop what listens on port {port}, or set {variable} to a free port "
            "(the demo workspace's connections keep the port they were created with)",
        ) from exc


def start_sandbox(settings: Settings, master_key: bytes) -> Sandbox:
    """Bind both servers (a port in use is one clear error) and serve them."""
    try:
        from grantflow.sandbox import saas, scim
    except ModuleNotFoundError as exc:  # scim2-server comes with the `sandbox` extra
        raise ConfigurationError(
            f"the sandbox needs the optional `sandbox` dependencies ({exc.name} is missing)",
            next_action="pip install -e '.[sandbox]' (what `make run` does)",
        ) from exc
    token = sandbox_token(master_key)
    held = saas.Holdings()
    port, scim_port = settings.sandbox_port, settings.sandbox_scim_port
    api = _bind(lambda: saas.make_server(HOST, port, token, held), "GRANTFLOW_SANDBOX_PORT", port)
    try:
        directory = _bind(
            lambda: scim.make_server(HOST, scim_port, token, SCIM_GROUPS),
            "GRANTFLOW_SANDBOX_SCIM_PORT",
            scim_port,
        )
    except ConfigurationError:
        api.server_close()
        raise
    sandbox = Sandbox(saas_url(settings), scim_url(settings), held, [api, directory])
    for server in sandbox.servers:
        thread = threading.Thread(target=server.serve_forever, name="sandbox", daemon=True)
        thread.start()
        sandbox.threads.append(thread)
    log.info("sandbox.started", saas_url=sandbox.saas_url, scim_url=sandbox.scim_url)
    return sandbox

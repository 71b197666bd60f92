"""The outbound guard for httpx2 (httpcore2), the HTTP stack scim2-client speaks through: the
same check (`outbound.allowed_address`) at connect time. Apart from `outbound` so that only a
process that runs SCIM steps loads httpx2."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

from grantflow.connections.outbound import OutboundPolicy, allowed_address, tls_context


class GuardedBackend2(httpcore2.SyncBackend):
    """The same guard for httpcore2 (under httpx2, which scim2-client speaks through)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        address = allowed_address(self.policy, host, port, httpcore2.ConnectError)
        return super().connect_tcp(address, port, timeout, local_address, socket_options)


def guarded_transport2(policy: OutboundPolicy) -> httpx2.HTTPTransport:
    """An httpx2 transport whose every connection goes through the guard. Proxies from the
    environment are ignored: a proxy would connect on our behalf, past the check."""
    transport = httpx2.HTTPTransport(verify=tls_context(), trust_env=False)
    transport._pool._network_backend = GuardedBackend2(policy)  # httpx2 exposes no parameter
    return transport

"""The outbound guard's exact address:port allowances (what the sandbox gets): one listening
socket is allowed, not the rest of its host."""

from __future__ import annotations

import ipaddress

import pytest

from grantflow.config import Settings
from grantflow.connections.outbound import OutboundPolicy, outbound_policy
from grantflow.errors import SafetyStop

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def test_an_allowed_endpoint_admits_its_port_only() -> None:
    """127.0.0.1:8470 allowed: that port passes; another port and 127.0.0.2 are refused."""
    policy = OutboundPolicy().with_endpoints(("127.0.0.1", 8470))
    policy.check("127.0.0.1", LOOPBACK, 8470)
    with pytest.raises(SafetyStop, match="loopback"):
        policy.check("127.0.0.1", LOOPBACK, 8471)
    with pytest.raises(SafetyStop, match="loopback"):
        policy.check("127.0.0.2", ipaddress.ip_address("127.0.0.2"), 8470)
    with pytest.raises(SafetyStop, match="loopback"):
        policy.check("127.0.0.1", LOOPBACK)  # a check without a port never matches one


def test_the_sandbox_setting_allows_its_two_ports() -> None:
    """With the sandbox on, the process's policy allows exactly its API and SCIM ports."""
    on = Settings(sandbox=True, sandbox_port=18470, sandbox_scim_port=18471)
    assert outbound_policy(on).allowed_endpoints == {(LOOPBACK, 18470), (LOOPBACK, 18471)}
    assert outbound_policy(Settings(sandbox=False)).allowed_endpoints == frozenset()

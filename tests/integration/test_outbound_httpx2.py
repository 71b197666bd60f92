"""The outbound guard under httpx2 (the HTTP stack of the SCIM steps): the same rules as under
httpx, checked on the address actually connected to, with the worker's policy."""

from __future__ import annotations

import httpx
import httpx2
import pytest

from grantflow.connections.outbound import OutboundPolicy, guarded_client, policy_of
from grantflow.connections.outbound_httpx2 import guarded_transport2
from grantflow.errors import SafetyStop
from tests.support.target import Reply, running_target


def test_loopback_is_refused_before_connecting() -> None:
    """Without an allowlist, 127.0.0.1 and a name resolving to it are refused (rule loopback);
    the target never sees a request."""
    with running_target() as target:
        target.on("/ping", Reply(200, {"ok": True}))
        port = target.url.rsplit(":", 1)[1]
        with httpx2.Client(transport=guarded_transport2(OutboundPolicy())) as client:
            for host in ("127.0.0.1", "localhost"):
                with pytest.raises(SafetyStop) as refused:
                    client.get(f"http://{host}:{port}/ping")
                assert refused.value.extra["rule"] == "loopback"
                assert f"outbound call to {host} refused" in refused.value.message
        assert target.calls() == []


def test_allowlisted_address_is_reached() -> None:
    """An allowlisted range is reached through the guarded httpx2 transport."""
    with running_target() as target:
        target.on("/ping", Reply(200, {"ok": True}))
        policy = OutboundPolicy.parse(["127.0.0.0/8"])
        with httpx2.Client(transport=guarded_transport2(policy)) as client:
            assert client.get(f"{target.url}/ping").json() == {"ok": True}


def test_the_workers_policy_is_read_from_its_client() -> None:
    """policy_of gives the policy a guarded httpx client enforces; an unguarded client gives
    the default policy, which refuses private addresses."""
    policy = OutboundPolicy.parse(["10.0.0.0/8"])
    with guarded_client(policy) as client:
        assert policy_of(client) is policy
    with httpx.Client() as plain:
        assert policy_of(plain) == OutboundPolicy()

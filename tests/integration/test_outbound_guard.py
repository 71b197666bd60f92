"""The outbound guard (SSRF): loopback, private, link-local (metadata), multicast and reserved
addresses are refused unless allowlisted, on the address actually connected to, on every
redirect hop; refusals name the rule; response bodies are capped.

Only 127.0.0.0/8 ever receives traffic here: every refusal of another address is proven to
happen before any connection attempt."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import httpcore
import pytest

from grantflow.connections.outbound import OutboundPolicy, guarded_client, refusal_rule
from grantflow.errors import SafetyStop
from grantflow.steps.transport import RESPONSE_LIMIT
from grantflow.store.database import Database
from tests.support.engine import publish, running_worker, start, wait_status
from tests.support.target import Reply, running_target


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record (and forbid) every TCP connection the guarded backend would open."""
    attempts: list[tuple[str, int]] = []

    def refuse(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        attempts.append((host, port))
        raise AssertionError(f"a connection to {host}:{port} was attempted")

    monkeypatch.setattr(httpcore._backends.sync.SyncBackend, "connect_tcp", refuse)
    return attempts


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "reserved"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_the_policy_refuses_non_public_addresses_naming_the_rule(address: str, rule: str) -> None:
    """Each refused range says which rule refused it and how to allow it."""
    with pytest.raises(SafetyStop) as refused:
        OutboundPolicy().check("target.example.com", ipaddress.ip_address(address))
    error = refused.value
    assert error.failure_class == "safety"
    assert error.code == "outbound_refused"
    assert rule in error.message
    assert "target.example.com" in error.message
    assert "GRANTFLOW_OUTBOUND_ALLOW" in (error.next_action or "")
    assert refusal_rule(ipaddress.ip_address(address)) is not None


def test_public_addresses_pass_and_allowlists_open_exactly_what_they_name() -> None:
    """Public addresses pass; an allowlisted range or host passes, its neighbours do not."""
    public = ipaddress.ip_address("93.184.216.34")
    OutboundPolicy().check("example.com", public)
    policy = OutboundPolicy.parse(["10.1.0.0/16", " Intranet.Example.com. ", "", "127.0.0.1"])
    policy.check("a", ipaddress.ip_address("10.1.200.3"))
    policy.check("b", ipaddress.ip_address("127.0.0.1"))
    policy.check("intranet.example.com", ipaddress.ip_address("10.9.9.9"))  # by name
    for host, address in [("c", "10.2.0.1"), ("d", "127.0.0.2"), ("e", "169.254.169.254")]:
        with pytest.raises(SafetyStop):
            policy.check(host, ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/admin",
        "http://[::1]:8080/",
        "http://[fd00::5]/",
        "http://192.168.0.1:443/",
    ],
)
def test_guarded_client_refuses_before_any_connection(
    url: str, no_connect: list[tuple[str, int]]
) -> None:
    """A refused address raises SafetyStop without a single connection attempt."""
    with guarded_client(OutboundPolicy()) as client, pytest.raises(SafetyStop):
        client.get(url)
    assert no_connect == []


def test_a_name_is_checked_by_the_address_it_resolves_to(
    no_connect: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A public-looking name resolving to the metadata address is refused without connecting."""
    real = socket.getaddrinfo

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "api.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with guarded_client(OutboundPolicy()) as client, pytest.raises(SafetyStop) as refused:
        client.get("http://api.example.com/")
    assert "169.254.169.254" in refused.value.message
    assert "link-local" in refused.value.message
    assert no_connect == []


def test_the_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is connected at the address that was checked, and the request keeps its Host."""
    real = socket.getaddrinfo

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "api.example.com":
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with running_target() as target:
        target.on("/who", Reply(200, {"ok": True}))
        port = target.url.rsplit(":", 1)[1]
        policy = OutboundPolicy.parse(["127.0.0.1"])
        with guarded_client(policy) as client:
            assert client.get(f"http://api.example.com:{port}/who").json() == {"ok": True}
    assert target.calls("/who")[0].headers["host"] == f"api.example.com:{port}"


def test_a_hostname_allowlist_admits_the_name_not_the_address() -> None:
    """`localhost` allowlisted by name is reachable; the same server by its address is not."""
    with running_target() as target:
        target.on("/ping", Reply(200, {"pong": True}))
        port = target.url.rsplit(":", 1)[1]
        with guarded_client(OutboundPolicy.parse(["localhost"])) as client:
            assert client.get(f"http://localhost:{port}/ping").json() == {"pong": True}
            with pytest.raises(SafetyStop) as refused:
                client.get(f"http://127.0.0.1:{port}/ping")
    assert "loopback" in refused.value.message
    assert len(target.calls("/ping")) == 1


@pytest.fixture
def redirecting() -> Iterator[tuple[Any, Any]]:
    """A server on 127.0.0.2 that redirects to a server on 127.0.0.1 (both loopback here)."""
    with running_target("127.0.0.2") as outer, running_target("127.0.0.1") as inner:
        inner.on("/landing", Reply(200, {"inner": True}))
        outer.on("/start", Reply(302, "", headers={"Location": f"{inner.url}/landing"}))
        yield outer, inner


def test_a_redirect_to_a_refused_address_is_refused_on_that_hop(
    redirecting: tuple[Any, Any],
) -> None:
    """Only 127.0.0.2 is allowlisted: its redirect to 127.0.0.1 is refused at the hop."""
    outer, inner = redirecting
    policy = OutboundPolicy.parse(["127.0.0.2"])
    with guarded_client(policy, follow_redirects=True) as client:
        with pytest.raises(SafetyStop) as refused:
            client.get(f"{outer.url}/start")
        assert "127.0.0.1" in refused.value.message
        assert "loopback" in refused.value.message
    assert len(outer.calls("/start")) == 1
    assert inner.calls() == []
    both = OutboundPolicy.parse(["127.0.0.1", "127.0.0.2"])
    with guarded_client(both, follow_redirects=True) as client:
        assert client.get(f"{outer.url}/start").json() == {"inner": True}


def _one_call(name: str, url: str, **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "manual"},
        "steps": [{"id": "call", "type": "http", "config": {"url": url, **config}}],
    }


def test_a_step_to_loopback_without_an_allowlist_fails_as_safety(database: Database) -> None:
    """Without an allowlist a step to 127.0.0.1 fails as safety naming loopback, sending nothing."""
    with running_target() as target:
        target.on("/users", Reply(200, {"ok": True}))
        wf = publish(database, _one_call("ssrf", f"{target.url}/users"))
        run_id = start(database, wf)
        with running_worker(database, outbound=OutboundPolicy()):
            shown = wait_status(database, run_id, "failed", "succeeded")
    assert shown["status"] == "failed"
    failure = shown["failure"]
    assert failure["class"] == "safety"
    assert "loopback" in failure["message"]
    assert "127.0.0.1" in failure["message"]
    assert "GRANTFLOW_OUTBOUND_ALLOW" in failure["next_action"]
    assert shown["steps"][0]["attempts"] == 1  # a refusal is never retried
    assert target.calls() == []


def test_a_step_redirected_to_a_refused_address_fails_as_safety(
    database: Database, redirecting: tuple[Any, Any]
) -> None:
    """A run calling allowlisted 127.0.0.2, redirected to 127.0.0.1, fails at the hop."""
    outer, inner = redirecting
    wf = publish(database, _one_call("hop", f"{outer.url}/start"))
    run_id = start(database, wf)
    with running_worker(database, outbound=OutboundPolicy.parse(["127.0.0.2"])):
        shown = wait_status(database, run_id, "failed", "succeeded")
    assert shown["status"] == "failed"
    assert shown["failure"]["class"] == "safety"
    assert "loopback" in shown["failure"]["message"]
    assert inner.calls() == []


def test_a_response_over_the_cap_fails_naming_the_limit(database: Database) -> None:
    """A body larger than 1 MiB is cut off: a safety failure (not retried) that names the
    limit and the setting that raises it."""
    with running_target() as target:
        target.on("/huge", Reply(200, "x" * (RESPONSE_LIMIT + 10)))
        target.on("/fits", Reply(200, "y" * (RESPONSE_LIMIT - 10)))
        wf = publish(database, _one_call("huge", f"{target.url}/huge"))
        fits = publish(database, _one_call("fits", f"{target.url}/fits"))
        with running_worker(database):
            shown = wait_status(database, start(database, wf), "failed", "succeeded")
            fine = wait_status(database, start(database, fits), "failed", "succeeded")
    assert shown["status"] == "failed"
    assert shown["failure"]["class"] == "safety"
    assert str(RESPONSE_LIMIT) in shown["failure"]["message"]
    assert "GRANTFLOW_RESPONSE_MAX_BYTES" in shown["failure"]["message"]
    assert "less" in shown["failure"]["next_action"]
    assert fine["status"] == "succeeded"
    attempt = fine["steps"][0]["attempt_log"][0]["response"]
    assert attempt["truncated"] is True  # kept in the record only in part
    assert len(attempt["body"]) < 64 * 1024


def test_the_guarded_client_keeps_no_cookie_from_anywhere() -> None:
    """Neither a response's Set-Cookie (on a redirect or not) nor code that sets one in the
    client puts a cookie into what it sends; a Cookie header a request carries itself goes."""
    policy = OutboundPolicy.parse(["127.0.0.1"])
    with running_target() as target, guarded_client(policy, follow_redirects=True) as client:
        target.on("/login", Reply(302, headers={"Set-Cookie": "a=1; Path=/", "Location": "/me"}))
        target.on("/me", Reply(200, {"ok": True}))
        assert client.get(f"{target.url}/login").status_code == 200
        client.cookies.set("b", "2")
        client.get(f"{target.url}/me")
        client.cookies = {"c": "3"}
        client.get(f"{target.url}/me")
        client.get(f"{target.url}/me", headers={"Cookie": "mine=4"})
        assert list(client.cookies.jar) == []
    sent = [(call.path, call.headers.get("cookie")) for call in target.calls()]
    assert sent == [
        ("/login", None),
        ("/me", None),
        ("/me", None),
        ("/me", None),
        ("/me", "mine=4"),
    ]

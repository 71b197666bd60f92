"""The outbound guard: calls to loopback, private, link-local (cloud metadata), multicast or
reserved addresses are refused unless allowlisted (by address, range or host name, or — for the
sandbox targets — by exact address and port). The check runs on the address actually
connected to, at connect time — every redirect hop included — so DNS rebinding cannot slip by.

Two HTTP stacks go through it: httpx (httpcore) for http and identity-provider steps, and httpx2
(httpcore2) for SCIM steps through scim2-client (`outbound_httpx2`, loaded by SCIM steps only).
Both backends call `allowed_address`, the one place the check runs."""

from __future__ import annotations

import dataclasses
import functools
import http.cookiejar
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpcore
import httpx
from httpcore._backends.sync import SyncBackend

from grantflow.errors import SafetyStop

if TYPE_CHECKING:
    from grantflow.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT


def refusal_rule(address: IPAddress) -> str | None:
    """The rule that refuses `address`, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (this includes cloud metadata endpoints)"
    # (before `private`: Python counts 0.0.0.0/8 and 240.0.0.0/4 as private too)
    if address.is_unspecified or address.is_reserved:
        return "reserved"
    if address.is_multicast:
        return "multicast"
    if address.is_private or address in _SHARED:
        return "private"
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    # (address, port) pairs allowed although private: one listening socket, not its whole host
    allowed_endpoints: frozenset[tuple[IPAddress, int]] = frozenset()

    def with_endpoints(self, *endpoints: tuple[str, int]) -> OutboundPolicy:
        """This policy, also allowing each exact `(address, port)`."""
        added = {(ipaddress.ip_address(address), port) for address, port in endpoints}
        return dataclasses.replace(self, allowed_endpoints=self.allowed_endpoints | added)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> OutboundPolicy:
        """Entries are addresses, CIDR ranges or host names (e.g. `127.0.0.1`, `10.0.0.0/8`,
        `intranet.example.com`)."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def check(self, host: str, address: IPAddress, port: int | None = None) -> None:
        if host.lower().rstrip(".") in self.allowed_hosts:
            return
        if port is not None and (address, port) in self.allowed_endpoints:
            return
        if any(address in network for network in self.allowed_networks):
            return
        rule = refusal_rule(address)
        if rule is not None:
            raise SafetyStop(
                f"outbound call to {host} refused: {address} is a {rule} address",
                code="outbound_refused",
                next_action=f"if {host} is meant to be reached, add it (or its range) to "
                "GRANTFLOW_OUTBOUND_ALLOW",
                rule=rule.split(" ")[0],
            )


def allowed_address(
    policy: OutboundPolicy,
    host: str,
    port: int,
    unresolvable: Callable[[str], Exception],
) -> str:
    """Resolve `host` and return the first of its addresses the policy allows; raise the
    refusal of the first one otherwise (or `unresolvable(message)` when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise unresolvable(f"cannot resolve {host}: {exc}") from exc
    refusal: SafetyStop | None = None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        try:
            policy.check(host, address, port)
        except SafetyStop as exc:
            refusal = refusal or exc
            continue
        return str(address)
    assert refusal is not None
    raise refusal


class GuardedBackend(SyncBackend):
    """httpcore's network backend, resolving names itself and checking the address it will
    connect to; TLS still verifies (and SNI still names) the original host."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        address = allowed_address(self.policy, host, port, httpcore.ConnectError)
        return super().connect_tcp(address, port, timeout, local_address, socket_options)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verifying TLS context every outbound client shares. Building one loads the CA
    bundle (20 ms or more), and httpx and httpx2 would build one for every client and
    transport: a SCIM step's session, an app, a worker."""
    return httpx.create_ssl_context()


def guarded_client(policy: OutboundPolicy, **options: Any) -> httpx.Client:
    """An httpx client whose every connection goes through the guard, and which keeps no
    cookie: one client serves every run and every connection of a process, so a cookie one
    call was given (a session) would go out with the next call to that host, whoever's it is.
    A step that needs a cookie sends it as a header of its own."""
    transport = httpx.HTTPTransport(
        verify=tls_context(), limits=options.pop("limits", httpx.Limits())
    )
    transport._pool._network_backend = GuardedBackend(policy)  # httpx exposes no parameter
    return CookielessClient(transport=transport, **options)


class NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: whatever sets a cookie in it (a response, a redirect,
    code) is ignored, so there is never one to send. (httpx sends what its client's jar holds
    without asking the jar's policy, so a policy alone would not do.)"""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


class KeptNone(httpx.Cookies):
    """A client's cookies that are never kept, in a jar that keeps none: a response's are not
    even read (httpx parses every response's cookies into its client's jar: 22 µs a
    response)."""

    def __init__(self) -> None:
        super().__init__(NoCookies())

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class CookielessClient(httpx.Client):
    """An httpx client whose cookies are `KeptNone`: setting them changes nothing."""

    _kept_none = KeptNone()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._kept_none

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        return None


def policy_of(client: httpx.Client) -> OutboundPolicy:
    """The policy a guarded httpx client (the worker's) enforces, to guard another client the
    same way; a client that is not guarded yields the default policy, which allows no private
    address."""
    transport = getattr(client, "_transport", None)
    backend = getattr(getattr(transport, "_pool", None), "_network_backend", None)
    return backend.policy if isinstance(backend, GuardedBackend) else OutboundPolicy()


def capped_request(
    client: httpx.Client, method: str, url: str, *, limit: int = 64 * 1024, **options: Any
) -> httpx.Response:
    """A request whose answer is read up to `limit` bytes (token endpoints and health checks
    answer small; a huge or endless body is a fault, not something to buffer)."""
    with client.stream(method, url, **options) as response:
        body = bytearray()
        for chunk in response.iter_bytes():
            body.extend(chunk)
            if len(body) > limit:
                raise httpx.DecodingError(
                    f"the answer from {response.url.host} is larger than {limit} bytes"
                )
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=bytes(body),
            request=response.request,
        )


def policy_for(allow: str) -> OutboundPolicy:
    """The policy of `GRANTFLOW_OUTBOUND_ALLOW` (comma-separated hosts and ranges)."""
    return OutboundPolicy.parse(allow.split(","))


def outbound_policy(settings: Settings) -> OutboundPolicy:
    """The policy of a process: `GRANTFLOW_OUTBOUND_ALLOW`, and — while the sandbox runs in it —
    the sandbox's own two address:port pairs (not the rest of loopback)."""
    policy = policy_for(settings.outbound_allow)
    if settings.sandbox:
        from grantflow.sandbox import endpoints

        policy = policy.with_endpoints(*endpoints(settings))
    return policy

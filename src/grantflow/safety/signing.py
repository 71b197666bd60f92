"""The inbound webhook signature scheme, as pure functions (senders, tests and the bench use
`sign`; the endpoint uses `verify`).

    Grantflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>
    Grantflow-Delivery: <the sender's unique id of this delivery>

The digest is HMAC-SHA256, keyed with the workflow's secret (its UTF-8 bytes), over the
timestamp, a full stop and the raw request body: `f"{t}.".encode() + body`. A header may carry
several `v1=` digests (a sender signing with two secrets while it rotates); one matching is
enough. Digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

SIGNATURE_HEADER = "Grantflow-Signature"
DELIVERY_HEADER = "Grantflow-Delivery"
TOLERANCE_SECONDS = 300  # a timestamp older (or further ahead) than this is refused
SECRET_PREFIX = "whsec_"
_MAX_HEADER = 2000
_MAX_DIGESTS = 5


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, URL-safe base64, with a recognisable prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str, timestamp: int, body: bytes) -> str:
    payload = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Grantflow-Signature` header value for `body` sent at `timestamp`."""
    return f"t={timestamp},v1={digest(secret, timestamp, body)}"


@dataclass(frozen=True)
class Signature:
    timestamp: int
    digests: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        """What a replay of this exact request would carry again (a dedup key)."""
        text = f"{self.timestamp}," + ",".join(sorted(self.digests))
        return hashlib.sha256(text.encode()).hexdigest()


def parse(header: str | None) -> Signature | None:
    """The header's timestamp and digests; None when it is missing or malformed."""
    if not header or len(header) > _MAX_HEADER:
        return None
    timestamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and len(value) == 64:
            digests.append(value.lower())
    if timestamp is None or not digests or len(digests) > _MAX_DIGESTS:
        return None
    return Signature(timestamp, tuple(digests))


def matches(secret: str, signature: Signature, body: bytes) -> bool:
    """Does one of the header's digests match? Every digest is compared (in constant time),
    so the time taken says nothing about which one, or how much of it, matched."""
    expected = digest(secret, signature.timestamp, body)
    found = False
    for candidate in signature.digests:
        found |= hmac.compare_digest(expected, candidate)
    return found

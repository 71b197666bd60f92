"""The console's keys, derived from the master key (HKDF-SHA256, label "grantflow console"):
one signs CSRF tokens, one signs the small cookies the console sets (flash messages, the SSO
round trip). Never the master key itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from grantflow.connections.crypto import derive_key

LABEL = b"grantflow console"


@dataclass(frozen=True)
class ConsoleKeys:
    csrf: bytes
    cookies: bytes

    @classmethod
    def derive(cls, master: bytes) -> ConsoleKeys:
        okm = derive_key(master, LABEL, 64)
        return cls(csrf=okm[:32], cookies=okm[32:])


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mac(key: bytes, message: str) -> str:
    return b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def seal(key: bytes, purpose: str, data: Any) -> str:
    """`data` as JSON, readable but tamper-evident: `<base64 json>.<hmac>`."""
    body = b64(json.dumps(data, separators=(",", ":")).encode())
    return f"{body}.{mac(key, purpose + '|' + body)}"


def unseal(key: bytes, purpose: str, sealed: str | None) -> Any:
    """What `seal` sealed for this purpose, or None when missing, malformed or forged."""
    if not sealed or "." not in sealed or len(sealed) > 4096:
        return None
    body, _, signature = sealed.partition(".")
    if not hmac.compare_digest(mac(key, purpose + "|" + body), signature):
        return None
    try:
        return json.loads(unb64(body))
    except ValueError:
        return None

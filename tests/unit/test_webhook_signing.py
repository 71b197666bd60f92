"""The webhook signature scheme: what `sign` produces, `parse` accepts and `matches` checks."""

from __future__ import annotations

import hashlib
import hmac

from grantflow.safety.signing import matches, new_secret, parse, sign


def test_the_signature_is_an_hmac_over_timestamp_dot_body() -> None:
    """v1 is the hex HMAC-SHA256 of '<t>.<body>' keyed with the secret's UTF-8 bytes."""
    body = b'{"a":1}'
    expected = hmac.new(b"whsec_k", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert sign("whsec_k", body, 1_700_000_000) == f"t=1700000000,v1={expected}"


def test_a_signature_matches_only_its_secret_and_body() -> None:
    """The digest verifies against the same secret and body, not a changed one of either."""
    secret = new_secret()
    header = parse(sign(secret, b"body", 42))
    assert header is not None
    assert matches(secret, header, b"body")
    assert not matches(secret, header, b"body ")
    assert not matches(new_secret(), header, b"body")


def test_one_of_several_digests_is_enough() -> None:
    """A header with two v1 digests (a sender rotating) verifies when either matches."""
    old, current = new_secret(), new_secret()
    digest = sign(current, b"x", 7).split("v1=")[1]
    header = parse(f"t=7,v1={'0' * 64},v1={digest}")
    assert header is not None
    assert matches(current, header, b"x")
    assert not matches(old, header, b"x")


def test_malformed_headers_parse_to_nothing() -> None:
    """No header, no timestamp, no digest, a short digest or a huge header parse to None."""
    for text in (
        None,
        "",
        "v1=" + "a" * 64,
        "t=5",
        "t=5,v1=abc",
        "t=x,v1=" + "a" * 64,
        "t=1" * 999,
    ):
        assert parse(text) is None, text


def test_secrets_are_fresh_and_prefixed() -> None:
    """Every new secret differs and starts with whsec_."""
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(s.startswith("whsec_") and len(s) > 40 for s in secrets)

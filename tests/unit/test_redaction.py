"""Redaction by value: a credential echoed in any form (generated secrets, generated echo
forms) is gone from the raw text and from the parsed document, the text around it survives,
and text without it is left alone. Redaction by name: URLs and mappings."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from grantflow.redaction import (
    NOTHING,
    REDACTED,
    redact_keys,
    redact_url,
    redactor_for,
)
from tests.support.echo import ANY_SECRETS, echoes, leaks

SETTINGS = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(secret=ANY_SECRETS, data=st.data())
def test_a_secret_echoed_inside_json_is_gone_from_the_body_and_the_parsed_output(
    secret: str, data: st.DataObject
) -> None:
    """A JSON body quoting the secret in any generated form keeps no form of it, still parses,
    and its parsed strings (escapes undone by parsing) hold no form of it either."""
    assume("BEFORE" not in secret and "AFTER" not in secret)
    echo = data.draw(echoes(secret, in_json=True))
    body = f'{{"before": "BEFORE", "echo": "{echo.written}", "after": "AFTER"}}'
    assert json.loads(body)["echo"] == echo.form  # the echo is what the test says it is
    redactor = redactor_for([secret], ["svc"])

    scrubbed = redactor.text(body)
    assert leaks(scrubbed, secret) == [], echo
    assert echo.written not in scrubbed
    parsed = json.loads(scrubbed)
    assert (parsed["before"], parsed["after"]) == ("BEFORE", "AFTER")
    assert REDACTED in parsed["echo"]

    output = redactor.value(json.loads(body))
    assert leaks(json.dumps(output, ensure_ascii=False), secret) == [], echo
    assert (output["before"], output["after"]) == ("BEFORE", "AFTER")


@SETTINGS
@given(secret=ANY_SECRETS, data=st.data())
def test_a_secret_echoed_in_plain_text_is_gone(secret: str, data: st.DataObject) -> None:
    """A text body (an error page, a query string) quoting the secret in any generated form
    keeps no form of it, and the words around it stay."""
    assume("BEFORE" not in secret and "AFTER" not in secret)
    echo = data.draw(echoes(secret, in_json=False))
    scrubbed = redactor_for([secret], ["svc"]).text(f"BEFORE [{echo.written}] AFTER")
    assert leaks(scrubbed, secret) == [], echo
    assert scrubbed.startswith("BEFORE ["), scrubbed
    assert scrubbed.endswith("] AFTER"), scrubbed


@settings(max_examples=100, derandomize=True, deadline=None)
@given(
    secret=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=4, max_size=7)
)
def test_a_short_secret_is_hidden_in_its_whole_forms(secret: str) -> None:
    """A secret too short to be recognised inside other base64 is still hidden plain, escaped,
    and as base64 of itself and of `user:secret` (HTTP Basic)."""
    redactor = redactor_for([secret], ["svc"])
    pair = base64.b64encode(f"svc:{secret}".encode()).decode()
    alone = base64.b64encode(secret.encode()).decode()
    for echoed in (secret, json.dumps(secret), pair, alone, alone.rstrip("=")):
        scrubbed = redactor.text(f"<{echoed}>")
        assert secret not in scrubbed, (echoed, scrubbed)
        assert pair not in scrubbed, (echoed, scrubbed)
        assert alone.rstrip("=") not in scrubbed, (echoed, scrubbed)


def test_text_without_the_secret_is_left_alone() -> None:
    """Escapes, percent signs, `+`, other base64 and near-misses of the secret are kept as
    they are: only the secret goes."""
    redactor = redactor_for(["s3cr3t-Value/42"], ["svc"])
    bodies = [
        '{"url": "https:\\/\\/example.com\\/a?b=c%20d", "note": "100% sure", "sum": "1+1=2"}',
        "name=Ann+Lee&city=K%C3%B6ln",
        base64.b64encode(b"svc:other-password").decode(),
        "s3cr3t-Value/41 and s3cr3t_Value/42",
        '"\\u00e9t\\u00E9 \\ud83d\\ude00"',
        "",
    ]
    for body in bodies:
        assert redactor.text(body) == body
    document = {"a": ["s3cr3t-Value/41", {"b": "https://example.com/x?y=%20"}], "n": 1}
    assert redactor.value(document) is document  # nothing to hide: not even copied


def test_every_place_and_several_secrets_are_hidden() -> None:
    """Each occurrence, overlapping and adjacent ones, and every secret of a combined redactor
    is replaced; dictionary keys too."""
    both = redactor_for(["alpha-secret"]) + redactor_for(["beta-secret"])
    text = "alpha-secretalpha-secret beta-secret alpha%2Dsecret"
    assert both.text(text) == f"{REDACTED} {REDACTED} {REDACTED}"
    assert both.value({"alpha-secret": ["x beta-secret", 3, None]}) == {
        REDACTED: [f"x {REDACTED}", 3, None]
    }
    assert NOTHING.text(text) == text
    assert not NOTHING
    assert redactor_for(["abc"]) is NOTHING  # too short to hunt by value


def test_the_redactor_of_a_credential_is_built_once() -> None:
    """The search forms of a credential are computed once and reused (the per-step path only
    looks them up)."""
    assert redactor_for(["a-long-secret-1"], ["u"]) is redactor_for(["a-long-secret-1"], ["u"])


def test_urls_hide_passwords_in_the_user_part_and_the_query() -> None:
    """`config show`'s URLs: the user part's password and secret-named query parameters."""
    assert redact_url("postgresql://app:pw@db:5432/gf?sslmode=require&password=hunter22") == (
        "postgresql://app:***@db:5432/gf?sslmode=require&password=***"
    )
    assert redact_url("postgresql://db/gf?sslpassword=x&user=app") == (
        "postgresql://db/gf?sslpassword=***&user=app"
    )
    plain = "postgresql+psycopg://app@db/gf?sslmode=require"
    assert redact_url(plain) == plain


def test_mapping_entries_named_like_secrets_are_hidden() -> None:
    """By name: `password`, `token`, `api_key`, ... at any depth."""
    assert redact_keys({"user": "ann", "nested": [{"api_key": "k", "ok": 1}], "Password": "p"}) == {
        "user": "ann",
        "nested": [{"api_key": REDACTED, "ok": 1}],
        "Password": REDACTED,
    }

"""Secrets, and the forms a target may echo them back in, as hypothesis strategies: raw;
URL- or form-encoded, wholly or partly, `%XX` in either case; base64, standard or URL-safe,
padded or not, of the secret, of `user:secret` or of the secret inside other bytes; and on top
of any of these, JSON string escaping (`\\/`, `\\"`, `\\uXXXX` in either case for any
character, surrogate pairs). `views` undoes these forms for checking that none survived."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote, unquote_plus

from hypothesis import strategies as st

# characters that tempt every encoder: JSON's escapes, URL syntax, base64's alphabet, a space,
# non-ASCII in two, three and four UTF-8 bytes (the last a surrogate pair in JSON)
_TRICKY = [*'aZ09/+"\\%=&?#-_.~ :é€😀\t\n']
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]")
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\n": "\\n", "\t": "\\t", "\r": "\\r"}

ASCII_SECRETS = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=40
)
ANY_SECRETS = st.one_of(
    st.text(st.sampled_from(_TRICKY), min_size=8, max_size=40),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=8, max_size=40),
)


@dataclass(frozen=True)
class Echo:
    """One way of echoing a secret: the text a target writes (`form`), how it was made
    (`how`), and whether it is written inside a JSON string (then `written` is escaped)."""

    form: str
    how: str
    written: str  # as it appears in the body


@st.composite
def percent_encoded(draw: st.DrawFn, secret: str, *, form: bool) -> str:
    """Each character plain (when URL syntax allows) or %XX (either case); a space `+` or %20."""
    out = []
    for c in secret:
        if c == " " and form and draw(st.booleans()):
            out.append("+")
        elif _UNRESERVED.fullmatch(c) and draw(st.booleans()):
            out.append(c)
        else:
            upper = draw(st.booleans())
            out.append("".join(f"%{b:02X}" if upper else f"%{b:02x}" for b in c.encode()))
    return "".join(out)


@st.composite
def json_escaped(draw: st.DrawFn, text: str) -> str:
    """`text` as the inside of a JSON string, each character plain, short-escaped or \\uXXXX."""
    out = []
    for c in text:
        choices = ["u"]
        if c in _JSON_SHORT:
            choices.append("short")
        if c not in '"\\' and ord(c) >= 0x20:
            choices.append("plain")
        how = draw(st.sampled_from(choices))
        if how == "plain":
            out.append(c)
        elif how == "short":
            out.append(_JSON_SHORT[c])
        else:
            units = c.encode("utf-16-be")
            upper = draw(st.booleans())
            for at in range(0, len(units), 2):
                code = f"{int.from_bytes(units[at : at + 2], 'big'):04x}"
                out.append("\\u" + (code.upper() if upper else code))
    return "".join(out)


@st.composite
def base64_of(draw: st.DrawFn, secret: str, user: str) -> tuple[str, str]:
    data = secret.encode()
    kind = draw(st.sampled_from(["secret", "user:secret", "inside"]))
    if kind == "user:secret":
        data = f"{user}:{secret}".encode()
    elif kind == "inside":
        data = draw(st.binary(max_size=5)) + data + draw(st.binary(max_size=5))
    encoded = base64.b64encode(data).decode()
    alphabet = draw(st.sampled_from(["standard", "url-safe"]))
    if alphabet == "url-safe":
        encoded = encoded.translate(str.maketrans("+/", "-_"))
    padded = draw(st.booleans())
    return (encoded if padded else encoded.rstrip("=")), f"base64 {alphabet} of {kind}"


@st.composite
def echoes(draw: st.DrawFn, secret: str, user: str = "svc", *, in_json: bool) -> Echo:
    """One echo of `secret`; `in_json`: written inside a JSON string (escaped on top)."""
    how = draw(st.sampled_from(["raw", "url", "form", "quote_plus", "base64"]))
    if how == "url":
        form = draw(percent_encoded(secret, form=False))
    elif how == "form":
        form = draw(percent_encoded(secret, form=True))
    elif how == "quote_plus":
        form = quote_plus(secret)
    elif how == "base64":
        form, how = draw(base64_of(secret, user))
    else:
        form = secret
    if not in_json:
        return Echo(form, how, form)
    if draw(st.booleans()):
        return Echo(form, how + ", JSON-escaped", draw(json_escaped(form)))
    return Echo(form, how + ", json.dumps", json.dumps(form)[1:-1])


_JSON_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{4}(?:\\u[0-9a-fA-F]{4})?|\\[\"\\/bfnrt]")


def _json_unescaped(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        try:
            return str(json.loads(f'"{match.group()}"'))
        except ValueError:
            return match.group()

    return _JSON_ESCAPE.sub(one, text)


def views(text: str) -> list[str]:
    """`text` and what it reads as with JSON escapes and URL encoding undone, in either order."""
    unescaped = _json_unescaped(text)
    return [
        text,
        unescaped,
        unquote(text),
        unquote_plus(text),
        unquote(unescaped),
        unquote_plus(unescaped),
        _json_unescaped(unquote(text)),
    ]


def base64_cores(secret: str) -> list[str]:
    """The base64 characters that carry only `secret`'s bytes, at each alignment, in both
    alphabets: found in a text, they mean a base64 echo survived."""
    data = secret.encode()
    cores = []
    for skip in range(3):
        encoded = base64.b64encode(b"\0" * skip + data).decode()
        core = encoded[-(-8 * skip // 6) : (8 * skip + 8 * len(data)) // 6]
        cores += [core, core.translate(str.maketrans("+/", "-_"))]
    return cores


def leaks(text: str, *secrets: str) -> list[str]:
    """Where any of `secrets` shows in `text` in a form `views` and `base64_cores` recognise."""
    found = []
    for view in views(text):
        for secret in secrets:
            for needle in [secret, *base64_cores(secret)]:
                at = view.find(needle)
                if at >= 0:
                    found.append(view[max(0, at - 80) : at + len(needle) + 40])
    return found

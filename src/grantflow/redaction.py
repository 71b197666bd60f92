"""Redaction: the one place that decides what a secret looks like and hides it.

Two ways, used by everything that records, shows or logs data:

- by name (`redact_keys`): a mapping entry whose key names a secret (`password`, `token`,
  `api_key`, `authorization`, ...) is replaced whatever its value — logs, audit summaries,
  dry-run previews and attempt requests; `redact_url` does the same for a URL's password and
  secret-named query parameters (`config show`).
- by value (`Redactor`): a credential's own text is replaced wherever it appears, in every form a
  target may echo it in — raw; JSON-escaped (`\\/`, `\\"`, `\\uXXXX` for any or all characters in
  either case, surrogate pairs); URL- or form-encoded (`%XX` in either case, `+` for a space,
  any mix of encoded and plain characters); base64, standard or URL-safe, padded or not, of the
  secret, of `user:secret`, and of the secret inside any longer base64 text (at each of the three
  byte alignments). A `Redactor` is compiled once per credential (`redactor_for` caches it) and
  applied per call to raw text (before any truncation) and to decoded data.
"""

from __future__ import annotations

import base64
import bisect
import functools
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

REDACTED = "** redacted **"
SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|authorization|api[_-]?key|credential)", re.I)
MIN_LENGTH = 4  # shorter values are not hunted by value: they would hide ordinary text
_MIN_CORE = 8  # the fewest base64 characters of a secret looked for inside longer base64 text

# JSON's two-character escapes (RFC 8259 §7); any character may also be written \uXXXX.
_JSON_UNESCAPE = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def redact_keys(value: Any) -> Any:
    """`value` with every mapping entry whose key names a secret replaced (recursively)."""
    if isinstance(value, dict):
        return {
            key: REDACTED if SECRET_KEYS.search(str(key)) else redact_keys(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_keys(item) for item in value]
    return value


def redact_url(url: str) -> str:
    """`url` with the password of its user part and secret-named query parameters replaced
    (`postgresql://u:pw@h/db?sslpassword=x` -> `postgresql://u:***@h/db?sslpassword=***`);
    unchanged when it has neither."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.partition(':')[0]}:***@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = parts.query
    if any(SECRET_KEYS.search(key) for key, _ in pairs):
        query = "&".join(
            f"{quote(key, safe='')}={'***' if SECRET_KEYS.search(key) else quote(item, safe='')}"
            for key, item in pairs
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_webhook_url(url: str) -> str:
    """A webhook URL as it may be shown: its user part and whole query hidden, whatever their
    names (webhooks commonly carry their secret as `?sig=`, `?code=` or the like)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "***"
    host = parts.hostname or ""
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?***" if parts.query else "")


class Redactor:
    """Hides a fixed set of secrets in text and in decoded data (strings in dicts and lists,
    keys included). Immutable; `+` combines two (a call that uses two credentials).

    Text is searched as it is and after undoing up to three layers of escapes (JSON's
    `\\uXXXX` — surrogate pairs included — and two-character escapes, and runs of `%XX`), with
    `+` and a space taken as the same character; a match is mapped back to the escaped text it
    came from, which is replaced whole, and a base64 match grows to the whole base64 word
    around it. Text without a backslash or a percent sign (most of it) is searched only as it
    is; the places of matches in escaped text are worked out only when there is one.
    """

    __slots__ = ("_plain", "_words")

    def __init__(self, plain: tuple[str, ...] = (), words: tuple[str, ...] = ()) -> None:
        self._plain = plain  # the secrets as they are (`+` as a space)
        self._words = words  # base64 forms: a match takes the whole base64 word around it

    def __bool__(self) -> bool:
        return bool(self._plain)

    def __add__(self, other: Redactor) -> Redactor:
        if not other or (other._plain, other._words) == (self._plain, self._words):
            return self
        if not self:
            return other
        return Redactor(
            tuple(sorted({*self._plain, *other._plain})),
            tuple(sorted({*self._words, *other._words})),
        )

    def text(self, text: str) -> str:
        if not self._plain or not text:
            return text
        if "\\" not in text and "%" not in text:
            spans = self._spans(text, text.replace("+", " "))
        elif self._present(text):
            spans = self._escaped_spans(text)  # (places: only where there is something)
        else:
            return text
        if not spans:
            return text
        pieces, last = [], 0
        for start, end in _merged(spans):
            pieces += [text[last:start], REDACTED]
            last = end
        pieces.append(text[last:])
        return "".join(pieces)

    def value(self, value: Any) -> Any:
        """Decoded data (a parsed JSON document, an error's details) with every string
        scrubbed, keys included; `value` itself when no string holds a secret."""
        if not self._plain:
            return value
        strings: list[str] = []
        _strings(value, strings)
        # one search over all the strings (a NUL between them: no form of a secret spans it)
        if not strings or not self._present("\0".join(strings)):
            return value
        return self._rebuilt(value)

    def _rebuilt(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                (self.text(k) if isinstance(k, str) else k): self._rebuilt(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._rebuilt(item) for item in value]
        return value

    def _present(self, text: str) -> bool:
        """Whether a secret is in `text` in any form: the cheap question (no places)."""
        needles = self._plain + self._words
        current = text
        for _ in range(_LAYERS + 1):
            searched = current.replace("+", " ")
            if any(needle in searched for needle in needles):
                return True
            if "\\" not in current and "%" not in current:
                return False
            unescaped = _ESCAPE.sub(_unescape_match, current)
            if unescaped == current:
                return False
            current = unescaped
        return False

    def _spans(self, text: str, searched: str) -> list[tuple[int, int]]:
        """Where the secrets are in `text` (`searched`: the same with `+` as a space)."""
        spans = []
        for needle in self._plain:
            at = searched.find(needle)
            while at >= 0:
                spans.append((at, at + len(needle)))
                at = searched.find(needle, at + 1)
        for needle in self._words:
            at = searched.find(needle)
            while at >= 0:
                start, end = at, at + len(needle)
                while start > 0 and text[start - 1] in _BASE64:
                    start -= 1
                while end < len(text) and text[end] in _BASE64:
                    end += 1
                spans.append((start, end))
                at = searched.find(needle, end)
        return spans

    def _escaped_spans(self, text: str) -> list[tuple[int, int]]:
        """`_spans` of `text` as it is and with up to `_LAYERS` layers of escapes undone (a
        URL-encoded secret in a JSON string whose `%` is itself escaped), as places in `text`."""
        spans = self._spans(text, text.replace("+", " "))
        layers: list[list[tuple[int, int, int, int]]] = []
        current = text
        for _ in range(_LAYERS):
            current, tokens = _unescaped(current)
            if not tokens:
                break
            layers.append(tokens)
            for start, end in self._spans(current, current.replace("+", " ")):
                for outer in reversed(layers):
                    start, end = _escaped(outer, start, False), _escaped(outer, end, True)
                spans.append((start, end))
        return spans


NOTHING = Redactor()


def redactor_for(secrets: Iterable[str], users: Iterable[str] = ()) -> Redactor:
    """The redactor of these secrets (`users`: names paired with them as `user:secret`, as in
    HTTP Basic). Its search forms are computed once per distinct credential (cached)."""
    wanted = tuple(sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_LENGTH}))
    if not wanted:
        return NOTHING
    names = tuple(sorted({u for u in users if isinstance(u, str)}))
    return _redactor(wanted, names)


@functools.lru_cache(maxsize=1024)
def _redactor(secrets: tuple[str, ...], users: tuple[str, ...]) -> Redactor:
    words: set[str] = set()
    for secret in secrets:
        words |= _base64_forms(secret, users)
    return Redactor(
        tuple(sorted({s.replace("+", " ") for s in secrets})),
        tuple(sorted({w.replace("+", " ") for w in words})),
    )


def _base64_forms(secret: str, users: tuple[str, ...]) -> set[str]:
    """Base64 texts that carry `secret`, in the standard and the URL-safe alphabet: the
    characters that encode only its bytes, at each of the three alignments it can have inside
    a longer text; for a short secret (too few such characters to tell it from chance), the
    encodings of it and of `user:secret` whole."""
    data = secret.encode("utf-8", "surrogatepass")
    found = set()
    for skip in range(3):
        encoded = base64.b64encode(b"\0" * skip + data).decode()
        start, end = -(-8 * skip // 6), (8 * skip + 8 * len(data)) // 6
        found.add(encoded[start:end])
    if min(len(core) for core in found) < _MIN_CORE:
        found = {
            base64.b64encode(prefix + data).decode().rstrip("=")
            for prefix in [b""] + [u.encode("utf-8", "surrogatepass") + b":" for u in users]
        }
    return found | {text.translate(_URL_SAFE) for text in found}


_URL_SAFE = str.maketrans("+/", "-_")
_LAYERS = 3  # escapes undone at most this deep (JSON over URL encoding over JSON, say)
_MAX = 1 << 62
_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=")
_ESCAPE = re.compile(  # (one leading literal per branch: the scan skips to `\\` or `%`)
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a surrogate pair
    r"|u[0-9a-fA-F]{4}|[\"\\/bfnrt])"
    r"|%[0-9a-fA-F]{2}(?:%[0-9a-fA-F]{2})*"
)


def _strings(value: Any, found: list[str]) -> None:
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                found.append(key)
            _strings(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _strings(item, found)


def _unescape_match(match: re.Match[str]) -> str:
    return _unescape(match.group())


@functools.lru_cache(maxsize=4096)
def _unescape(token: str) -> str:
    if token[0] == "%":
        try:
            return bytes.fromhex(token.replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:  # part of a character: the rest is escaped a layer deeper
            return token
    if token[1] == "u":
        units = [int(token[at + 2 : at + 6], 16) for at in range(0, len(token), 6)]
        if len(units) == 2:  # a surrogate pair: one character
            return chr(0x10000 + ((units[0] - 0xD800) << 10) + (units[1] - 0xDC00))
        return chr(units[0])
    return _JSON_UNESCAPE[token[1]]


def _unescaped(text: str) -> tuple[str, list[tuple[int, int, int, int]]]:
    """`text` with one layer of escapes undone, and per escape where its plain text is and
    where it was: (plain start, plain end, escaped start, escaped end)."""
    pieces: list[str] = []
    tokens: list[tuple[int, int, int, int]] = []
    last = plain_at = 0
    for match in _ESCAPE.finditer(text):
        start, end = match.span()
        pieces.append(text[last:start])
        plain_at += start - last
        plain = _unescape(match.group())
        pieces.append(plain)
        tokens.append((plain_at, plain_at + len(plain), start, end))
        plain_at += len(plain)
        last = end
    if not tokens:
        return text, tokens
    pieces.append(text[last:])
    return "".join(pieces), tokens


def _escaped(tokens: list[tuple[int, int, int, int]], position: int, end: bool) -> int:
    """A place in unescaped text as a place in the text it came from; an edge inside an
    escape's plain text takes the whole escape."""
    at = position - 1 if end else position
    k = bisect.bisect_right(tokens, (at, _MAX)) - 1
    if k < 0:
        return position
    _, plain_end, escaped_start, escaped_end = tokens[k]
    if at < plain_end:
        return escaped_end if end else escaped_start
    return escaped_end + (position - plain_end)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged

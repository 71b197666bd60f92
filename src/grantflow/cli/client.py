"""The one way data commands reach Grantflow: its REST API.

With a server URL (`--url`, `GRANTFLOW_URL`, or the profile `grantflow login` saved) the client
speaks HTTP to that server with an API token. Without one, the same requests go to the app
running inside this process on the configured database (`grantflow.cli.local`), acting as the
CLI itself (`system:cli`), or as the token's user when a token is given. Either way a command
has one code path, and the API's permission checks, validation and error messages apply to it.

Imported on every command, so only the standard library is used here: the HTTP transport is
`http.client`, and the in-process app (FastAPI, SQLAlchemy) loads only in local mode.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from grantflow import __version__, timestamps

if TYPE_CHECKING:
    import http.client

API = "/api/v1"
FULL_ID = 36  # the length of a whole id; anything shorter is resolved by the server first
MIN_PREFIX = 4  # the shortest id prefix accepted (as grantflow.store.ids, which the server uses)
TIMEOUT_SECONDS = 600.0  # a reconciliation or a large import answers when it is done
STREAM_BYTES = 1 << 20  # a download is written on a megabyte at a time


@dataclass
class Options:
    """The root command's global options (`grantflow --url ... --token ... COMMAND`)."""

    url: str | None = None
    token: str | None = None
    local: bool = False


OPTIONS = Options()


class ApiError(Exception):
    """An error answered by the API (or met reaching it): printed as one line and `next:`."""

    def __init__(
        self,
        status: int,
        message: str,
        next_action: str | None = None,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
        exit_code: int = 1,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.next_action = next_action
        self.code = code
        self.details = details or []
        self.body = body or {}
        self.exit_code = exit_code


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content) if self.content else None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Sink(Protocol):
    """Where a successful answer's body goes as it arrives (a download), instead of memory."""

    def write(self, data: bytes, /) -> object: ...


class Transport(Protocol):
    where: str  # how messages name the other side

    def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        into: Sink | None = None,
    ) -> Response: ...

    def close(self) -> None: ...


class HttpTransport:
    """HTTP/1.1 to a Grantflow server, one kept-alive connection per command."""

    def __init__(self, url: str, timeout: float = TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(
                0,
                f"GRANTFLOW_URL: {url!r} is not an http(s) URL",
                "give the server's base URL, e.g. https://grantflow.example.com",
                exit_code=2,
            )
        self.where = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._reused = False

    def _open(self) -> http.client.HTTPConnection:
        import http.client  # (only remote commands need it)

        if self._connection is None:
            if self._https:
                import ssl

                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout,
                    context=ssl.create_default_context(),
                )  # fmt: skip
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            self._reused = False
        return self._connection

    def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        into: Sink | None = None,
    ) -> Response:
        import http.client

        for attempt in (1, 2):
            connection = self._open()
            try:
                connection.request(method, self._prefix + target, body=body, headers=headers)
                answer = connection.getresponse()
                streaming = into is not None and 200 <= answer.status < 300
                content = b"" if streaming else answer.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if self._reused and attempt == 1:
                    continue  # the server closed the idle connection: open a new one, once
                raise self._unreachable("the connection was closed") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(str(exc) or type(exc).__name__) from None
            if streaming:
                assert into is not None
                self._stream(answer, into)
            self._reused = True
            headers_out = {k.lower(): v for k, v in answer.getheaders()}
            return Response(answer.status, headers_out, content)
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream(self, answer: http.client.HTTPResponse, into: Sink) -> None:
        """The body into `into` as it arrives. A body cut short is the connection's fault (not
        the content's): http.client's read(n) then answers b"" instead of raising. What the
        sink raises (a full disk) is its own, and goes up as it is."""
        import http.client

        while True:
            try:
                chunk = answer.read(STREAM_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(str(exc) or type(exc).__name__) from None
            if not chunk:
                break
            try:
                into.write(chunk)
            except BaseException:
                self.close()  # (the rest of the answer is still on its way)
                raise
        if answer.length:  # (bytes the Content-Length promised that never came)
            self.close()
            raise self._unreachable(
                f"the connection was closed {answer.length} bytes before the end of the answer"
            )

    def _unreachable(self, reason: str) -> ApiError:
        return ApiError(
            0,
            f"cannot reach Grantflow at {self.where}: {reason}",
            "check GRANTFLOW_URL (or --url, or `grantflow login`) and that the server is up",
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _query(params: dict[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool):
                pairs.append((key, "true" if item else "false"))
            else:
                pairs.append((key, str(timestamps.plain(item))))
    return urlencode(pairs)


def segment(value: str) -> str:
    """One path segment: an id, a name or an email, quoted."""
    return quote(value.strip(), safe="")


class Client:
    """Requests to /api/v1 with the token; an error answer raises `ApiError`."""

    def __init__(self, transport: Transport, token: str | None, *, remote: bool) -> None:
        self.transport = transport
        self.token = token
        self.remote = remote

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        into: Sink | None = None,
    ) -> Response:
        """The answer; with `into`, a successful answer's body is written there as it arrives
        (the returned content is empty), an error's read as usual."""
        target = API + path
        query = _query(params or {})
        if query:
            target += "?" + query
        headers = {"accept": "application/json", "user-agent": f"grantflow-cli/{__version__}"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        payload = b""
        if content is not None:
            payload = content
            headers["content-type"] = content_type or "application/octet-stream"
        elif body is not None:
            payload = json.dumps(body, default=timestamps.json_default).encode()
            headers["content-type"] = "application/json"
        answer = self.transport.send(method, target, headers, payload, into)
        if answer.status >= 400:
            raise self._error(answer)
        return answer

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, params=params, body=body).json()

    def put(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("PUT", path, params=params, body=body).json()

    def patch(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("PATCH", path, params=params, body=body).json()

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params).json()

    def items(self, path: str, limit: int, page_size: int = 500, **params: Any) -> list[Any]:
        """Up to `limit` items of a paged list, following `next_cursor`."""
        found: list[Any] = []
        cursor = None
        while len(found) < limit:
            page = self.get(path, cursor=cursor, limit=min(page_size, limit - len(found)), **params)
            found.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return found

    def full_id(self, collection: str, raw: str) -> str:
        """The whole id of `raw` (an id, a unique id prefix, or a name where the collection has
        names): the server resolves it on GET; a whole id needs no request."""
        if len(raw) == FULL_ID and raw.count("-") == 4:
            return raw
        found: str = self.get(f"{collection}/{segment(raw)}")["id"]
        return found

    def me(self) -> dict[str, Any]:
        shown: dict[str, Any] = self.get("/me")
        return shown

    def _error(self, answer: Response) -> ApiError:
        try:
            body = answer.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            text = answer.text.strip().splitlines()[0][:200] if answer.text.strip() else ""
            return ApiError(
                answer.status, f"HTTP {answer.status} from {self.transport.where}: {text}"
            )
        next_action = error.get("next_action")
        if answer.status == 401 and not next_action:
            next_action = (
                "set GRANTFLOW_TOKEN (or pass --token, or run `grantflow login`) to a valid API "
                "token"
            )
        return ApiError(
            answer.status,
            str(error.get("message") or f"HTTP {answer.status}"),
            next_action,
            code=error.get("code"),
            details=error.get("details") or [],
            body=error,
        )


@dataclass(frozen=True)
class Remote:
    url: str
    token: str | None
    source: str  # where the URL came from, for messages


def remote_target() -> Remote | None:
    """The server to talk to: `--url`, else GRANTFLOW_URL, else the saved profile; None means
    the local database (also with `--local`)."""
    if OPTIONS.local:
        return None
    token = OPTIONS.token or os.environ.get("GRANTFLOW_TOKEN") or None
    if OPTIONS.url:
        return Remote(OPTIONS.url, token, "--url")
    if os.environ.get("GRANTFLOW_URL"):
        return Remote(os.environ["GRANTFLOW_URL"], token, "GRANTFLOW_URL")
    from grantflow.cli import profile

    saved = profile.load()
    if saved is not None:
        return Remote(saved.url, token or saved.token, f"the profile {saved.path}")
    return None


@contextlib.contextmanager
def connect(*, act_as: str | None = None) -> Iterator[Client]:
    """A client for this command: to the server, or to the app in this process. `act_as`
    (the `--as EMAIL` of decisions) names the person acting: locally the CLI acts as them; a
    server knows them only by their token, so there it must be the token's user."""
    remote = remote_target()
    transport: Transport
    if remote is not None:
        if not remote.token:
            raise ApiError(
                0,
                f"GRANTFLOW_TOKEN: talking to {remote.url} (from {remote.source}) needs an API "
                "token",
                "set GRANTFLOW_TOKEN, pass --token, or run `grantflow login`",
                exit_code=2,
            )
        transport = HttpTransport(remote.url)
        client = Client(transport, remote.token, remote=True)
    else:
        from grantflow.cli import local

        token = OPTIONS.token or os.environ.get("GRANTFLOW_TOKEN") or None
        transport = local.transport(act_as=None if token else act_as)
        client = Client(transport, token, remote=False)
    try:
        if act_as and (remote is not None or client.token):
            _check_acting(client, act_as)
        yield client
    finally:
        transport.close()


def _check_acting(client: Client, act_as: str) -> None:
    me = client.me()
    if str(me.get("email", "")).lower() != act_as.strip().lower():
        raise ApiError(
            0,
            f"--as {act_as}: this token belongs to {me.get('email')}; with a token you act as "
            "its user",
            f"use {act_as}'s own token, or leave out --as",
        )

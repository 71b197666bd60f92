"""`grantflow login | logout`: the saved profile (server URL and API token) the CLI uses when no
`--url` or GRANTFLOW_URL is given.

The profile is `$XDG_CONFIG_HOME/grantflow/profile.toml` (`~/.config/grantflow/profile.toml`),
written with mode 0600 in a 0700 directory; the token in it is never printed. A profile that
other users can read is refused until its mode is fixed.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from grantflow.cli.context import JSON_OPTION, emit_json, errors_as_lines, out

HEADER = "# written by `grantflow login`: a Grantflow server and an API token. Keep it private.\n"


@dataclass(frozen=True)
class Profile:
    url: str
    token: str
    email: str | None
    path: Path


def path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "grantflow" / "profile.toml"


def load() -> Profile | None:
    """The saved profile, or None when there is none."""
    from grantflow.cli.client import ApiError

    where = path()
    try:
        mode = where.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ApiError(
            0,
            f"the profile {where} can be read by other users (mode {stat.S_IMODE(mode):o})",
            f"chmod 600 {where}, or run `grantflow login` again",
            exit_code=2,
        )
    import tomllib

    try:
        data = tomllib.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ApiError(
            0, f"the profile {where} cannot be read: {exc}", "run `grantflow login` again",
            exit_code=2,
        ) from None  # fmt: skip
    url, token = data.get("url"), data.get("token")
    if not isinstance(url, str) or not isinstance(token, str):
        raise ApiError(
            0, f"the profile {where} has no url or token", "run `grantflow login` again",
            exit_code=2,
        )  # fmt: skip
    email = data.get("email")
    return Profile(url, token, email if isinstance(email, str) else None, where)


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=True)  # a JSON ASCII string is a TOML basic string


def save(url: str, token: str, email: str | None) -> Path:
    where = path()
    where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = HEADER + f"url = {_toml_string(url)}\ntoken = {_toml_string(token)}\n"
    if email:
        text += f"email = {_toml_string(email)}\n"
    partial = where.with_name(where.name + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(partial, 0o600)  # (an existing .part file kept its old mode)
    os.replace(partial, where)
    return where


def login(
    url: str = typer.Option(
        None, "--url", help="the server's base URL (default: the global --url or GRANTFLOW_URL)"
    ),
    token_stdin: bool = typer.Option(
        False, "--token-stdin", help="read the API token from standard input"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Save a server URL and API token as the profile every later command uses. The token comes
    from --token-stdin, the global --token, GRANTFLOW_TOKEN, or a hidden prompt; it is checked
    against the server first and never printed."""
    from grantflow.cli.client import OPTIONS, ApiError, Client, HttpTransport

    with errors_as_lines():
        given = url or OPTIONS.url or os.environ.get("GRANTFLOW_URL")
        if not given:
            raise ApiError(0, "--url: which server?", "grantflow login --url https://HOST")
        if token_stdin:
            token = sys.stdin.readline().strip()
        else:
            token = OPTIONS.token or os.environ.get("GRANTFLOW_TOKEN") or ""
            if not token:
                token = typer.prompt("API token", hide_input=True).strip()
        if not token:
            raise ApiError(0, "no API token given", "create one with `grantflow tokens create`")
        transport = HttpTransport(given)
        try:
            me = Client(transport, token, remote=True).me()
        finally:
            transport.close()
        saved = save(given, token, me.get("email"))
    shown = {"url": given.rstrip("/"), "email": me.get("email"), "profile": str(saved)}
    if as_json:
        emit_json(shown)
    else:
        out.print(
            f"logged in to {shown['url']} as {shown['email']}; the profile {saved} (mode 0600) "
            "is used when no --url or GRANTFLOW_URL is given",
            markup=False,
        )


def logout(
    revoke: bool = typer.Option(False, "--revoke", help="also revoke the token on the server"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Forget the saved profile (the CLI then uses the local database again)."""
    from grantflow.cli.client import Client, HttpTransport

    with errors_as_lines():
        saved = load()
        revoked = None
        if saved is not None and revoke:
            transport = HttpTransport(saved.url)
            try:
                client = Client(transport, saved.token, remote=True)
                mine = client.get("/me/tokens")
                match = next((t for t in mine if saved.token.startswith(t["prefix"])), None)
                if match is not None:
                    revoked = client.post(f"/tokens/{match['id']}/revoke")["id"]
            finally:
                transport.close()
        if saved is not None:
            saved.path.unlink()
    shown = {
        "logged_out": saved is not None,
        "url": saved.url if saved else None,
        "profile": str(saved.path if saved else path()),
        "revoked_token_id": revoked,
    }
    if as_json:
        emit_json(shown)
    elif saved is None:
        out.print(f"no saved profile ({path()})", markup=False)
    else:
        extra = f"; token {revoked} revoked" if revoked else ""
        out.print(f"logged out of {saved.url} (removed {saved.path}){extra}", markup=False)

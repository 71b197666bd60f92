"""`grantflow users invite | set-password | sign-in-link` as an admin runs them (subprocesses),
and what they hand out working in the console over HTTP."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.config import Settings
from tests.conftest import Api
from tests.support.processes import COMMAND, grantflow_env, json_output, run_grantflow

pytestmark = pytest.mark.acceptance

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _env(settings: Settings) -> dict[str, str]:
    assert settings.secret_key is not None
    return grantflow_env(
        database_url=settings.database_url, secret_key=settings.secret_key.get_secret_value()
    )


def _cli(settings: Settings, cwd: Path, *args: str) -> Any:
    return json_output(run_grantflow(*args, env=_env(settings), cwd=cwd))


def _set_password(
    settings: Settings, cwd: Path, email: str, password: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "users", "set-password", email, "--password-stdin"],
        input=password + "\n",
        env=_env(settings),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _form_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = _CSRF.search(page.text)
    assert match is not None
    return match.group(1)


def _login(api: Api, email: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=api.base_url, timeout=60) as client:
        token = _form_token(client, "/login")
        return client.post(
            "/login",
            data={"csrf_token": token, "email": email, "password": password, "next": "/"},
        )


def test_invite_then_set_password_then_sign_in(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    """`users invite --role approver --print-link` creates the user and prints a link to the
    password page; `users set-password --password-stdin` refuses a short password and sets a
    good one, which then signs in at /login."""
    invited = _cli(
        settings,
        tmp_path,
        "users",
        "invite",
        "new@example.com",
        "--role",
        "approver",
        "--print-link",
        "--json",
    )
    assert invited["created"] is True
    assert "/password/set/" in invited["url"]
    with httpx.Client(timeout=60) as client:
        page = client.get(api.base_url + httpx.URL(invited["url"]).path)
    assert page.status_code == 200
    assert "new@example.com" in page.text
    short = _set_password(settings, tmp_path, "new@example.com", "short")
    assert short.returncode == 1
    assert "password: must be at least 10 characters" in short.stderr
    done = _set_password(settings, tmp_path, "new@example.com", "a long enough passphrase")
    assert done.returncode == 0, done.stderr
    assert _login(api, "new@example.com", "a long enough passphrase").status_code == 303
    assert _login(api, "new@example.com", "short").status_code == 401


def test_sign_in_link_works_once(api: Api, settings: Settings, tmp_path: Path) -> None:
    """`users sign-in-link` prints a link: its page offers to continue, the POST signs in once,
    and the second use is 410 saying it was used."""
    api.user_token("ops@example.com")
    printed = _cli(settings, tmp_path, "users", "sign-in-link", "ops@example.com", "--json")
    path = httpx.URL(printed["url"]).path
    assert path.startswith("/login/link/")
    with httpx.Client(base_url=api.base_url, timeout=60) as client:
        token = _form_token(client, path)
        first = client.post(path, data={"csrf_token": token})
        assert first.status_code == 303
        assert first.headers["location"] == "/"
        assert "grantflow_session" in client.cookies
    with httpx.Client(base_url=api.base_url, timeout=60) as again:
        response = again.get(path)
    assert response.status_code == 410
    assert "This link was already used" in response.text

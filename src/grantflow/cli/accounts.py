"""`grantflow users set-password | invite | sign-in-link`: console sign-in for a user."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from grantflow.cli.context import JSON_OPTION, emit_json, errors_as_lines, out

if TYPE_CHECKING:
    from grantflow.auth.models import User
    from grantflow.auth.permissions import Role
else:  # typer reads the annotation at start-up; the enum's module is light
    from grantflow.auth.permissions import Role

# These open the database directly (bootstrap: a first password, an invitation, a sign-in link
# for a user who has none), so what they need is imported when they run, not with `users`.


def _by_email(session: Any, email: str) -> User:
    from grantflow.auth import users
    from grantflow.errors import NotFound

    user = users.find_user_by_email(session, email)
    if user is None:
        raise NotFound(f"no user with email {email}", next_action="check `grantflow users list`")
    return user


def set_password(
    email: str = typer.Argument(..., help="the user's e-mail"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="read the password from the first line of stdin"
    ),
) -> None:
    """Set a user's console password (asked twice, not echoed); their sessions end."""
    from grantflow.auth import users
    from grantflow.auth.actor import Actor
    from grantflow.cli.direct import database

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    with errors_as_lines(), database() as db, db.transaction() as session:
        user = _by_email(session, email)
        users.set_password(session, Actor.system("cli"), user.id, password)
    out.print(f"password set for {user.email}; they sign in at /login")


def invite(
    email: str = typer.Argument(..., help="the e-mail of the person to invite"),
    name: str = typer.Option(None, "--name", help="display name (a new user)"),
    role: list[Role] = typer.Option([], "--role", help="roles of a new user (repeat)"),
    print_link: bool = typer.Option(
        False, "--print-link", help="print the link instead of e-mailing it (hand it over)"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Invite someone to choose a password: creates the user when new (with --role), then
    e-mails them a single-use link (GRANTFLOW_INVITE_LINK_HOURS), or prints it."""
    from grantflow import audit
    from grantflow.auth import signin_links, users
    from grantflow.auth.actor import Actor
    from grantflow.auth.signin_links import Purpose
    from grantflow.cli.direct import database, settings
    from grantflow.errors import ValidationError
    from grantflow.people import account_email

    CLI = Actor.system("cli")
    loaded = settings()
    with errors_as_lines(), database(loaded) as db, db.transaction() as session:
        user = users.find_user_by_email(session, email)
        created = user is None
        if user is None:
            if not role:
                raise ValidationError(
                    "--role: a new user needs at least one role",
                    next_action="pass --role viewer (or approver, operator, editor, auditor, "
                    "admin)",
                )
            user = users.create_user(session, CLI, email=email, display_name=name, roles=role)
        url = None
        if print_link:
            audit.record(session, CLI, "user.invited", "user", user.id, {"email": user.email})
            _link, url = signin_links.mint(session, CLI, loaded, user, Purpose.INVITE)
            sent = "printed"
        else:
            sent = account_email.invite(session, CLI, loaded, user)
        user_email = user.email
    if as_json:
        emit_json({"email": user_email, "created": created, "email_status": sent, "url": url})
    elif url:
        out.print(f"invitation for {user_email} (works once; hand it over privately):")
        out.print(url, markup=False)
    elif sent == "skipped":
        out.print(
            f"e-mail is off (GRANTFLOW_SMTP_HOST is not set): the invitation to {user_email} "
            "was recorded but not sent; use --print-link to hand the link over yourself"
        )
    else:
        out.print(f"invitation to {user_email} queued; a worker (grantflow serve) sends it")


def sign_in_link(
    email: str = typer.Argument(..., help="the user's e-mail"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print a one-time link that signs the user in to the console (once, for
    GRANTFLOW_SIGNIN_LINK_MINUTES)."""
    from grantflow.auth import signin_links
    from grantflow.auth.actor import Actor
    from grantflow.auth.signin_links import Purpose
    from grantflow.cli.direct import database, settings

    loaded = settings()
    with errors_as_lines(), database(loaded) as db, db.transaction() as session:
        user = _by_email(session, email)
        link, url = signin_links.mint(session, Actor.system("cli"), loaded, user, Purpose.SIGN_IN)
        expires = link.expires_at
    if as_json:
        emit_json({"email": user.email, "url": url, "expires_at": expires})
    else:
        out.print(
            f"one-time sign-in link for {user.email} (works once, until {expires:%H:%M} UTC):"
        )
        out.print(url, markup=False)


def register(users_app: typer.Typer) -> None:
    users_app.command("set-password")(set_password)
    users_app.command("invite")(invite)
    users_app.command("sign-in-link")(sign_in_link)

"""The comparison of a reconciliation: the accounts a target lists against the application's
active grants.

Each account is matched to an identity by userName (case-insensitive), then by email, then by
externalId == the identity's id; a deleted identity is still found by the userName and email
it had (`attributes.deleted_user_name` / `deleted_email`). Then, per account:

- no active grant for the matched person (or no person at all): **orphan**, and when the
  person has left (lifecycle state leaver or left, or deleted) a *leaver orphan* — access that
  should be gone and is not;
- a second account of a person whose grant already has one: **duplicate**;
- an account of a person with an active grant: **matched**, and a **mismatch** too when it is
  deactivated, or its email or displayName differ from the identity's.

Every identity with an active grant that no account matched is **missing**.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.access.grants import GrantStatus
from grantflow.access.lifecycle import LifecycleState
from grantflow.access.models import Grant, Identity
from grantflow.access.reconcile_target import Account


class ItemKind(enum.StrEnum):
    ORPHAN = "orphan"  # an account nobody is granted
    DUPLICATE = "duplicate"  # a second account of a granted person
    MISSING = "missing"  # a grant without an account
    MISMATCH = "mismatch"  # an account that disagrees with its identity


class Severity(enum.StrEnum):
    HIGH = "high"  # a person who left still has an active account
    MEDIUM = "medium"
    LOW = "low"


_KIND_ORDER = {k: n for n, k in enumerate(ItemKind)}
_SEVERITY_ORDER = {s: n for n, s in enumerate(Severity)}
_LEFT = {LifecycleState.LEAVER.value, LifecycleState.LEFT.value}
_MATCH_ORDER = {"userName": 0, "email": 1, "externalId": 2, None: 3}


@dataclass(frozen=True)
class Person:
    id: str
    user_name: str  # the current one, or the one a deleted identity had
    email: str | None
    display_name: str
    state: str  # the lifecycle state, or "deleted"

    @property
    def left(self) -> bool:
        return self.state in _LEFT or self.state == "deleted"


@dataclass
class Directory:
    """The identities, indexed by what an account can be matched on."""

    by_user_name: dict[str, Person]
    by_email: dict[str, Person]
    by_id: dict[str, Person]

    def match(self, account: Account) -> tuple[Person | None, str | None]:
        person = self.by_user_name.get(account.user_name.strip().lower())
        if person is not None:
            return person, "userName"
        for email in account.emails:
            person = self.by_email.get(email)
            if person is not None:
                return person, "email"
        if account.external_id:
            person = self.by_id.get(account.external_id.strip())
            if person is not None:
                return person, "externalId"
        return None, None


def load_directory(session: Session) -> Directory:
    rows = session.execute(
        select(
            Identity.id,
            Identity.user_name,
            Identity.email,
            Identity.display_name,
            Identity.lifecycle_state,
            Identity.deleted_at,
            Identity.attributes,
        )
    ).all()
    directory = Directory({}, {}, {})
    live: list[Person] = []
    for row in rows:
        if row.deleted_at is not None:
            attributes = row.attributes or {}
            old_email = attributes.get("deleted_email")
            person = Person(
                id=row.id,
                user_name=str(attributes.get("deleted_user_name") or row.user_name),
                email=str(old_email).lower() if old_email else None,
                display_name=row.display_name,
                state="deleted",
            )
            _index(directory, person)  # first: a rehire with the same keys wins below
        else:
            live.append(
                Person(row.id, row.user_name, row.email, row.display_name, row.lifecycle_state)
            )
    for person in live:
        _index(directory, person)
    return directory


def _index(directory: Directory, person: Person) -> None:
    directory.by_id[person.id] = person
    directory.by_user_name[person.user_name.strip().lower()] = person
    if person.email:
        directory.by_email[person.email.lower()] = person


@dataclass(frozen=True)
class GrantRef:
    id: str
    role: str


def active_grants(session: Session, application_id: str) -> dict[str, list[GrantRef]]:
    """Active grants of the application, per identity (oldest first)."""
    rows = session.execute(
        select(Grant.id, Grant.identity_id, Grant.role)
        .where(Grant.application_id == application_id, Grant.status == GrantStatus.ACTIVE)
        .order_by(Grant.granted_at, Grant.id)
    ).all()
    granted: dict[str, list[GrantRef]] = {}
    for row in rows:
        granted.setdefault(row.identity_id, []).append(GrantRef(row.id, row.role))
    return granted


def _roles(grants: list[GrantRef]) -> list[str]:
    return [g.role for g in grants if g.role]


def _item(
    kind: ItemKind,
    severity: Severity,
    detail: str,
    *,
    account: Account | None = None,
    person: Person | None = None,
    grants: list[GrantRef] | None = None,
    matched_by: str | None = None,
    problems: list[str] | None = None,
    other_account_id: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "kind": kind.value,
        "severity": severity.value,
        "account_id": account.id if account else None,
        "user_name": account.user_name if account else None,
        "email": account.email if account else None,
        "display_name": account.display_name if account else None,
        "account_active": account.active if account else None,
        "identity_id": person.id if person else None,
        "identity_user_name": person.user_name if person else None,
        "identity_email": person.email if person else None,
        "identity_display_name": person.display_name if person else None,
        "identity_state": person.state if person else None,
        "leaver": bool(person and person.left),
        "grant_id": grants[0].id if grants else None,
        "grant_ids": [g.id for g in grants or []],
        "roles": _roles(grants or []),
        "matched_by": matched_by,
        "problems": problems or [],
        "detail": detail,
    }
    if other_account_id is not None:
        item["matched_account_id"] = other_account_id
    return item


def _who(person: Person) -> str:
    return person.email or person.user_name


def _orphan(account: Account, person: Person | None, matched_by: str | None) -> dict[str, Any]:
    status = "deactivated (active=false)" if account.active is False else "active"
    if person is None:
        return _item(
            ItemKind.ORPHAN,
            Severity.MEDIUM,
            f"no identity matches this account (userName, email or externalId); the "
            f"account is {status}",
            account=account,
        )
    if person.left:
        state = {
            "deleted": "was deleted",
            LifecycleState.LEAVER.value: "is leaving (offboarding not finished)",
        }.get(person.state, "has left")
        still = (
            "the account is deactivated but still exists"
            if account.active is False
            else "the account is still active: remove or deactivate it in the target"
        )
        return _item(
            ItemKind.ORPHAN,
            Severity.MEDIUM if account.active is False else Severity.HIGH,
            f"{_who(person)} {state} and has no active grant; {still}",
            account=account,
            person=person,
            matched_by=matched_by,
        )
    return _item(
        ItemKind.ORPHAN,
        Severity.MEDIUM,
        f"{_who(person)} has no active grant for this application; the account is {status}",
        account=account,
        person=person,
        matched_by=matched_by,
    )


def _disagreements(account: Account, person: Person) -> list[tuple[str, str]]:
    found = []
    if account.active is False:
        found.append(("inactive", "the account is deactivated (active=false)"))
    if person.email and person.email.lower() not in account.emails[:1]:
        has = f"email {account.email!r}" if account.email else "no email"
        found.append(("email", f"the account has {has}, the identity {person.email!r}"))
    shown = (account.display_name or "").strip()
    if person.display_name and shown != person.display_name.strip():
        has = f"displayName {shown!r}" if shown else "no displayName"
        found.append(
            ("display_name", f"the account has {has}, the identity {person.display_name!r}")
        )
    return found


@dataclass
class Comparison:
    summary: dict[str, int]
    items: list[dict[str, Any]]


def compare(
    accounts: Iterable[Account], directory: Directory, granted: dict[str, list[GrantRef]]
) -> Comparison:
    items: list[dict[str, Any]] = []
    matched_account: dict[str, str] = {}  # identity id -> the account matched to its grant
    counts = dict.fromkeys(
        ("accounts", "matched", "in_sync", "mismatches", "orphans", "leaver_orphans", "duplicates"),
        0,
    )
    # The strongest match claims a person's grant first (userName, then email, then
    # externalId), so which account is the duplicate does not depend on the listing order.
    paired = [(account, *directory.match(account)) for account in accounts]
    paired.sort(key=lambda p: (_MATCH_ORDER[p[2]], p[0].user_name.lower(), p[0].id))
    for account, person, matched_by in paired:
        counts["accounts"] += 1
        grants = granted.get(person.id) if person is not None else None
        if person is None or not grants:
            item = _orphan(account, person, matched_by)
            counts["orphans"] += 1
            counts["leaver_orphans"] += int(item["leaver"])
            items.append(item)
            continue
        if person.id in matched_account:
            first = matched_account[person.id]
            counts["duplicates"] += 1
            items.append(
                _item(
                    ItemKind.DUPLICATE,
                    Severity.MEDIUM,
                    f"{_who(person)} already has account {first} for the grant; this is a "
                    "second account",
                    account=account,
                    person=person,
                    grants=grants,
                    matched_by=matched_by,
                    other_account_id=first,
                )
            )
            continue
        matched_account[person.id] = account.id
        counts["matched"] += 1
        problems = _disagreements(account, person)
        if not problems:
            counts["in_sync"] += 1
            continue
        counts["mismatches"] += 1
        items.append(
            _item(
                ItemKind.MISMATCH,
                Severity.LOW,
                "; ".join(text for _, text in problems),
                account=account,
                person=person,
                grants=grants,
                matched_by=matched_by,
                problems=[name for name, _ in problems],
            )
        )
    missing = 0
    for identity_id, grants in granted.items():
        if identity_id in matched_account:
            continue
        person = directory.by_id.get(identity_id)
        if person is None:  # (a grant always has its identity; defensive)
            continue
        missing += 1
        roles = _roles(grants)
        items.append(
            _item(
                ItemKind.MISSING,
                Severity.LOW,
                f"{_who(person)} has an active grant"
                + (f" (roles: {', '.join(roles)})" if roles else "")
                + " but no account in the target (looked for userName, email and "
                "externalId)",
                person=person,
                grants=grants,
            )
        )
    counts["missing"] = missing
    counts["active_grants"] = sum(len(g) for g in granted.values())
    counts["granted_identities"] = len(granted)
    items.sort(
        key=lambda i: (
            _SEVERITY_ORDER[Severity(i["severity"])],
            _KIND_ORDER[ItemKind(i["kind"])],
            (i["user_name"] or i["identity_user_name"] or "").lower(),
        )
    )
    return Comparison(counts, items)

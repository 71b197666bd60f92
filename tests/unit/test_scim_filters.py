"""SCIM filters compiled to SQL agree with scim2-models' own evaluation of the filter.

Each filter runs twice over the same identities (an in-memory SQLite database): as the SQL the
compiler emits, and as `ScimFilter.match` on the served representation. Where the compiler says
its SQL is exact the two answers are the same; otherwise the SQL answer must contain the other
(it only narrows the rows that are then checked one by one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from scim2_models import InvalidFilterException, SCIMException
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from grantflow.access.models import GroupMember, Identity, IdentityGroup
from grantflow.access.scim import groups, mapping, search, users
from grantflow.access.scim.filters import compile_filter
from grantflow.access.scim.resources import ENTERPRISE_SCHEMA, GroupResource, UserResource
from grantflow.access.scim.search import bound_filter
from grantflow.store.base import Base

BASE = "https://grantflow.example/scim/v2"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _user(session: Session, number: int, **scim: Any) -> Identity:
    """An identity as a SCIM push leaves it: columns plus the pushed representation."""
    resource = UserResource.model_validate({"userName": f"placeholder{number}", **scim})
    fields = mapping.identity_fields(resource)
    mapping.normalise(resource, fields)
    identity = Identity(
        id=f"00000000-0000-0000-0000-00000000000{number}",
        email=fields.email,
        user_name=fields.user_name,
        external_id=fields.external_id,
        display_name=fields.display_name,
        given_name=fields.given_name,
        family_name=fields.family_name,
        title=fields.title,
        department=fields.department,
        manager_id=fields.manager,
        active=fields.active,
        lifecycle_state="active",
        scim=mapping.stored(resource),
        created_at=T0 + dt.timedelta(days=number),
        updated_at=T0 + dt.timedelta(days=number, hours=1),
    )
    session.add(identity)
    session.flush()
    return identity


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    tables = [Identity.__table__, IdentityGroup.__table__, GroupMember.__table__]
    Base.metadata.create_all(engine, tables=tables)  # type: ignore[arg-type]
    with Session(engine) as session:
        _user(
            session,
            1,
            userName="ada@example.com",
            externalId="HR-1",
            name={"givenName": "Ada", "familyName": "Lovelace"},
            emails=[
                {"value": "Ada@Example.com", "type": "work", "primary": True},
                {"value": "ada.home@example.org", "type": "home"},
            ],
            title="Engineer",
            nickName="ada",
            **{ENTERPRISE_SCHEMA: {"department": "R&D"}},
        )
        _user(
            session,
            2,
            userName="Grace",
            externalId="hr-2",
            displayName="Grace Hopper",
            emails=[{"value": "grace@example.com", "type": "work"}],
            active=False,
            **{
                ENTERPRISE_SCHEMA: {
                    "department": "Ops",
                    "manager": {
                        "value": "00000000-0000-0000-0000-000000000001",
                        "$ref": f"{BASE}/Users/00000000-0000-0000-0000-000000000001",
                    },
                }
            },
        )
        _user(
            session, 3, userName="linus_t", title="CTO%_", nickName="Åsa", displayName="Ørjan Ölund"
        )
        _user(session, 4, userName="nobody", active=True, phoneNumbers=[{"value": "555-0100"}])
        eng = IdentityGroup(id="g1", display_name="Engineering", external_id="E", scim={})
        empty = IdentityGroup(id="g2", display_name="Empty", scim={})
        session.add_all([eng, empty])
        session.flush()
        session.add(GroupMember(group_id="g1", identity_id="00000000-0000-0000-0000-000000000001"))
        session.flush()
        yield session


def _names(rows: Any) -> set[str]:
    return {getattr(r, "user_name", None) or r.display_name for r in rows}


def _both(session: Session, kind: search.Kind, text: str) -> tuple[set[str], set[str], bool]:
    """(rows the SQL selects, rows scim2-models matches, whether the SQL claims exactness)."""
    bound = bound_filter(kind.model, text)
    compiled = compile_filter(bound, kind.catalog)
    sql = session.execute(select(kind.table).where(compiled.clause)).scalars().all()
    rows = session.execute(select(kind.table)).scalars().all()
    resources = kind.render(session, list(rows), BASE, True)
    matched = [row for row, r in zip(rows, resources, strict=True) if bound.match(r)]
    return _names(sql), _names(matched), compiled.exact


USER_FILTERS = [
    ('userName eq "ADA@example.com"', {"ada@example.com"}, True),
    ('userName ne "grace"', {"ada@example.com", "linus_t", "nobody"}, True),
    ('userName co "_"', {"linus_t"}, True),  # LIKE wildcards are escaped
    ('userName sw "GR"', {"Grace"}, True),
    ('userName ew ".com"', {"ada@example.com"}, True),
    ("userName pr", {"ada@example.com", "Grace", "linus_t", "nobody"}, True),
    ('externalId eq "hr-1"', set(), True),  # externalId is case-exact
    ('externalId eq "HR-1"', {"ada@example.com"}, True),
    ('externalId co "r"', {"Grace"}, False),  # case-exact LIKE: SQLite narrows, Python decides
    ("externalId pr", {"ada@example.com", "Grace"}, True),
    ("not (externalId pr)", {"linus_t", "nobody"}, True),
    ('title eq "CTO%_"', {"linus_t"}, True),
    ('title gt "D"', {"ada@example.com"}, False),  # string ordering is left to Python
    ('name.givenName eq "ada" and name.familyName sw "love"', {"ada@example.com"}, True),
    ('displayName eq "Grace Hopper"', {"Grace"}, False),
    ("displayName pr", {"Grace", "linus_t"}, False),  # the others were pushed without one
    ("active eq false", {"Grace"}, False),
    ("active eq true", {"nobody"}, False),  # pushed without `active`: no attribute to compare
    ('emails.value eq "ada.home@example.org"', {"ada@example.com"}, False),
    ('emails co "EXAMPLE.COM"', {"ada@example.com", "Grace"}, False),
    ('emails[type eq "work" and value sw "grace"]', {"Grace"}, False),
    (
        'emails[value eq "grace@example.com" or value eq "ada@example.com"]',
        {"ada@example.com", "Grace"},
        False,
    ),
    (f'{ENTERPRISE_SCHEMA}:department eq "r&d"', {"ada@example.com"}, True),
    (
        f'{ENTERPRISE_SCHEMA}:manager.value eq "00000000-0000-0000-0000-000000000001"',
        {"Grace"},
        True,
    ),
    ('meta.created gt "2024-01-02T12:00:00Z"', {"Grace", "linus_t", "nobody"}, True),
    ('meta.lastModified le "2024-01-02T01:00:00Z"', {"ada@example.com"}, True),
    ('meta.resourceType eq "User"', {"ada@example.com", "Grace", "linus_t", "nobody"}, True),
    ('groups.value eq "g1"', {"ada@example.com"}, True),
    ("groups pr", {"ada@example.com"}, True),
    ('nickName eq "ADA"', {"ada@example.com"}, False),
    ('displayName eq "ØRJAN ÖLUND"', {"linus_t"}, False),  # non-ASCII: SQL narrows by LIKE
    ('displayName sw "ørjan ö"', {"linus_t"}, False),
    ('displayName co "Ö"', {"linus_t"}, False),
    ('nickName eq "åSA"', {"linus_t"}, False),
    ("phoneNumbers.value pr", {"nobody"}, False),
    (
        'userName eq "grace" or (title pr and not (userName sw "linus"))',
        {"Grace", "ada@example.com"},
        True,
    ),
    ('not (nickName pr) and userName sw "a"', set(), False),
    ('not (emails[type eq "home"])', {"Grace", "linus_t", "nobody"}, False),
]


@pytest.mark.parametrize(("text", "expected", "exact"), USER_FILTERS)
def test_user_filters_match_the_rfc_semantics(
    session: Session, text: str, expected: set[str], exact: bool
) -> None:
    """The SQL of a user filter selects what scim2-models matches (or a superset of it)."""
    selected, matched, claimed = _both(session, users.USERS, text)
    assert matched == expected
    assert claimed is exact
    if exact:
        assert selected == matched
    else:
        assert selected >= matched


GROUP_FILTERS = [
    ('displayName eq "engineering"', {"Engineering"}, True),
    ('members eq "00000000-0000-0000-0000-000000000001"', {"Engineering"}, True),
    ('members[value eq "00000000-0000-0000-0000-000000000001"]', {"Engineering"}, True),
    ('members.value ne "00000000-0000-0000-0000-000000000001"', {"Empty"}, True),
    ("members pr", {"Engineering"}, True),
    ('externalId eq "E" and id eq "g1"', {"Engineering"}, True),
    ('meta.resourceType eq "User"', set(), True),
]


@pytest.mark.parametrize(("text", "expected", "exact"), GROUP_FILTERS)
def test_group_filters_match_the_rfc_semantics(
    session: Session, text: str, expected: set[str], exact: bool
) -> None:
    selected, matched, claimed = _both(session, groups.GROUPS, text)
    assert matched == expected
    assert claimed is exact
    assert selected == matched


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('bogus eq "x"', "bogus"),
        ("userName eq", "syntax"),
        ('userName xx "a"', "syntax"),
        ("active gt true", "gt"),
        ('(userName eq "a"', "syntax"),
        ('password eq "secret"', "password"),
        (f'{ENTERPRISE_SCHEMA}:nope eq "x"', "nope"),
    ],
)
def test_unsupported_filters_are_invalid_filter(session: Session, text: str, detail: str) -> None:
    """A filter that does not parse, names no attribute or tests the password is invalidFilter."""

    def run() -> None:
        request = search.read_search([UserResource], {"filter": text})
        search.search(session, [users.USERS], request, BASE)

    with pytest.raises(SCIMException) as raised:
        run()
    assert raised.value.scim_type == "invalidFilter"
    assert detail in str(raised.value.detail).lower()
    assert isinstance(raised.value, InvalidFilterException)


def test_an_attribute_of_the_other_type_is_false_at_the_root(session: Session) -> None:
    """Searching users and groups at once: userName is false for groups, members for users."""
    request = search.read_search(
        [UserResource, GroupResource], {"filter": 'userName sw "g" or displayName sw "e"'}
    )
    listed = search.search(session, [users.USERS, groups.GROUPS], request, BASE)
    found = {r.get("userName") or r["displayName"] for r in listed["Resources"]}
    assert found == {"Grace", "Engineering", "Empty"}
    assert listed["totalResults"] == 3


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"sortBy": "userName"}, ["ada@example.com", "Grace", "linus_t", "nobody"]),
        (
            {"sortBy": "userName", "sortOrder": "descending"},
            ["nobody", "linus_t", "Grace", "ada@example.com"],
        ),
        ({"sortBy": "title"}, ["linus_t", "ada@example.com", "Grace", "nobody"]),
        ({"sortBy": "nickName", "count": "3"}, ["ada@example.com", "linus_t", "Grace"]),
        ({"startIndex": "3", "count": "5"}, ["linus_t", "nobody"]),
        ({"startIndex": "0", "count": "1"}, ["ada@example.com"]),
        ({"count": "0"}, []),
    ],
)
def test_sorting_and_paging(
    session: Session, parameters: dict[str, str], expected: list[str]
) -> None:
    """sortBy orders as RFC 7644 §3.4.2.3 says (missing values last); startIndex is 1-based."""
    request = search.read_search([UserResource], parameters)
    listed = search.search(session, [users.USERS], request, BASE)
    assert [r["userName"] for r in listed["Resources"]] == expected
    assert listed["totalResults"] == 4
    assert listed["itemsPerPage"] == len(expected)

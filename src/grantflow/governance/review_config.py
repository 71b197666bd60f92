"""What an access review campaign is configured with — its scope, who reviews first, the
fallback, how long it runs, the default decision — and the words for its states. A config is
read by `parse_config`, whose errors name each wrong field (`body.config.<field>`)."""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticError

from grantflow.access.lifecycle import LifecycleState
from grantflow.auth.permissions import Permission, Role, permissions_for
from grantflow.durations import Duration
from grantflow.errors import ValidationError
from grantflow.strict import Bool

DECIDER = Permission.WORKFLOW_TASK  # what deciding an item takes (as approvals do)


class ReviewStatus(enum.StrEnum):
    OPEN = "open"
    CLOSING = "closing"  # decisions are final; the workers revoke what defaulted to revoke
    CLOSED = "closed"


class Decision(enum.StrEnum):
    KEEP = "keep"
    REVOKE = "revoke"


class ReviewerKind(enum.StrEnum):
    MANAGER = "manager"  # the identity's manager, as a Grantflow user (matched by e-mail)
    APPLICATION_OWNER = "application_owner"  # applications.owner_id
    USERS = "users"  # the named users
    ROLES = "roles"  # any member of the named roles


class Source(enum.StrEnum):
    """Where an item's reviewers came from (ReviewItem.reviewer_source)."""

    MANAGER = "manager"
    OWNER = "owner"
    NAMED = "named"
    FALLBACK = "fallback"


def _listed(value: Any) -> Any:
    """One value or a list of them."""
    return [value] if isinstance(value, str) else value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Texts = Annotated[list[Text], BeforeValidator(_listed), Field(max_length=200)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


def _deciding_roles(roles: list[Role]) -> list[Role]:
    for role in roles:
        if DECIDER not in permissions_for([role]):
            raise ValueError(
                f"role {role} cannot decide reviews (it lacks {DECIDER}); use "
                + ", ".join(r.value for r in Role if DECIDER in permissions_for([r]))
            )
    return roles


DecidingRoles = Annotated[list[Role], Field(max_length=10)]


class IdentityFilter(BaseModel):
    """Which identities' grants are in scope; every field given must match (values of one
    field are alternatives). Text matches ignore case."""

    model_config = ConfigDict(extra="forbid")

    department: Texts = Field(default_factory=list)
    title: Texts = Field(default_factory=list)
    lifecycle_state: Annotated[list[LifecycleState], BeforeValidator(_listed)] = Field(
        default_factory=list
    )
    attributes: dict[str, str] = Field(
        default_factory=dict, max_length=20, description="identity attributes equal to these"
    )


class ReviewScope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applications: Texts = Field(
        default_factory=list, description="application names or ids; empty: every application"
    )
    roles: Annotated[
        list[Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]],
        BeforeValidator(_listed),
        Field(max_length=200),
    ] = Field(
        default_factory=list,
        description='grant roles; empty: any ("" is access to the application itself)',
    )
    identity: IdentityFilter = Field(default_factory=IdentityFilter)


class Fallback(BaseModel):
    """Who reviews an item when the first choice cannot."""

    model_config = ConfigDict(extra="forbid")

    users: Annotated[list[Email], BeforeValidator(_listed), Field(max_length=50)] = Field(
        default_factory=list, description="emails or ids of users"
    )
    roles: DecidingRoles = Field(default_factory=list)

    _roles = field_validator("roles")(_deciding_roles)

    @model_validator(mode="after")
    def _someone(self) -> Fallback:
        if not self.users and not self.roles:
            raise ValueError("name at least one fallback user or role")
        return self


class ReviewConfig(BaseModel):
    """An access review campaign, as started by hand or by an access_review job."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=150)]
    scope: ReviewScope = Field(default_factory=ReviewScope)
    reviewer: ReviewerKind = Field(..., description="who reviews each grant first")
    users: Annotated[list[Email], BeforeValidator(_listed), Field(max_length=50)] = Field(
        default_factory=list, description="reviewer: users — their emails or ids"
    )
    roles: DecidingRoles = Field(default_factory=list, description="reviewer: roles")
    fallback: Fallback = Field(..., description="when the first choice cannot review an item")
    duration: Duration = Field(dt.timedelta(days=14), description="how long the campaign runs")
    remind_before: Duration | None = Field(
        None, description="remind reviewers with pending items this long before the end"
    )
    default_decision: Decision = Field(
        Decision.KEEP, description="what undecided items get when the campaign ends"
    )
    require_justification_for_keep: Bool = False

    _roles = field_validator("roles")(_deciding_roles)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: dt.timedelta) -> dt.timedelta:
        if not dt.timedelta(minutes=1) <= value <= dt.timedelta(days=366):
            raise ValueError("must be between 1 minute and 366 days")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ReviewConfig:
        if self.reviewer == ReviewerKind.USERS and not self.users:
            raise ValueError("users: reviewer is users, so name at least one user")
        if self.reviewer == ReviewerKind.ROLES and not self.roles:
            raise ValueError("roles: reviewer is roles, so name at least one role")
        if self.remind_before is not None and not (
            dt.timedelta(0) < self.remind_before < self.duration
        ):
            raise ValueError("remind_before: must be more than 0 and less than the duration")
        return self


def parse_config(config: dict[str, Any], *, prefix: str = "body.config") -> ReviewConfig:
    """The config, or a validation error naming each wrong field."""
    try:
        return ReviewConfig.model_validate(config)
    except PydanticError as exc:
        details = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            named = re.match(r"^([a-z_]+): (.*)$", message)
            if not loc and named:  # a rule across fields names the field it is about
                loc, message = named.group(1), named.group(2)
            if err["type"] == "extra_forbidden":
                message = "unknown field; remove it (check the spelling of the field name)"
            details.append({"field": f"{prefix}.{loc}" if loc else prefix, "message": message})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        raise ValidationError(f"access review config: {summary}", details=details) from None


def check(config: dict[str, Any]) -> None:
    parse_config(config)

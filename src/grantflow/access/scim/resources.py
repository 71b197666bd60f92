"""The SCIM service Grantflow offers: its models, its tolerance policy and its configuration."""

from __future__ import annotations

from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    Patch,
    Reference,
    Resource,
    ResourceType,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_models.reference import External

MEDIA_TYPE = "application/scim+json"
BASE_PATH = "/scim/v2"

UserResource = User[EnterpriseUser]
GroupResource = Group
ENTERPRISE_SCHEMA = str(EnterpriseUser.__schema__)
USER_SCHEMA = str(User.__schema__)
GROUP_SCHEMA = str(Group.__schema__)

# the largest page a list or search answers; startIndex/count page through more
MAX_RESULTS = 1000
DEFAULT_COUNT = 100
# a filter SQL can only narrow is re-checked in Python over at most this many candidates
MAX_CANDIDATES = 10_000

# What Grantflow tolerates from a SCIM client. Every setting is one of Microsoft Entra's known
# departures from the RFC (see `grantflow.access.scim.entra` for the ones handled by hand):
POLICY = ScimPolicy(
    # attributes of schemas Grantflow does not declare are kept and returned as pushed
    unknown=ScimPolicy.Unknown.keep,
    # Entra removes group members with {"op": "Remove", "path": "members", "value": [...]}
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    # Entra replaces `emails[type eq "work"].value` on a user that has no work email yet
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

CONFIG = ServiceProviderConfig(
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=MAX_RESULTS),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=True),
    etag=ETag(supported=True),
    authentication_schemes=[
        AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken,
            name="Grantflow SCIM token",
            description=("A bearer token with scope scim: grantflow tokens create --scope scim"),
            spec_uri=Reference[External]("https://datatracker.ietf.org/doc/html/rfc6750"),
            primary=True,
        )
    ],
)

USER_TYPE = ResourceType.from_resource(UserResource).model_copy(
    update={"description": "A person: a Grantflow identity"}
)
GROUP_TYPE = ResourceType.from_resource(GroupResource).model_copy(
    update={"description": "A group of identities (department, team, HR group)"}
)

PROVIDER = ScimProvider(
    models=[User, EnterpriseUser, Group],
    resource_types=[USER_TYPE, GROUP_TYPE],
    config=CONFIG,
    policy=POLICY,
)

AnyResource = Resource[Any]


def location(base_url: str, endpoint: str, resource_id: str) -> str:
    """The URL of a resource, e.g. https://host/scim/v2/Users/<id>."""
    return f"{base_url.rstrip('/')}/{endpoint}/{resource_id}"


def etag(version: int) -> str:
    return f'W/"{version}"'

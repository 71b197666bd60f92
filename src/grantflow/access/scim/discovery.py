"""Discovery (RFC 7644 §4): ServiceProviderConfig, ResourceTypes and Schemas, from scim2-models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from scim2_models import (
    ForbiddenException,
    ListResponse,
    Meta,
    NotFoundException,
    ResourceType,
    Schema,
    ServiceProviderConfig,
)

from grantflow.access.scim.resources import CONFIG, PROVIDER

DiscoveryT = TypeVar("DiscoveryT", ResourceType, Schema, ServiceProviderConfig)


def _no_filter(query: Mapping[str, str]) -> None:
    """RFC 7644 §4: a filter on a discovery endpoint SHOULD be answered 403."""
    if "filter" in query:
        raise ForbiddenException(detail="discovery endpoints do not support filtering")


def _located(resource: DiscoveryT, url: str) -> DiscoveryT:
    meta = Meta(resource_type=type(resource).__name__, location=url)
    return resource.model_copy(update={"meta": meta})


def _listed(resources: Sequence[DiscoveryT], model: type[DiscoveryT], url: str) -> dict[str, Any]:
    response = ListResponse[model](  # type: ignore[valid-type]
        total_results=len(resources),
        start_index=1,
        items_per_page=len(resources),
        resources=[_located(r, f"{url}/{r.id}") for r in resources],
    )
    return response.model_dump()


def service_provider_config(base_url: str, query: Mapping[str, str]) -> dict[str, Any]:
    _no_filter(query)
    return _located(CONFIG, f"{base_url}/ServiceProviderConfig").model_dump()


def resource_types(base_url: str, query: Mapping[str, str]) -> dict[str, Any]:
    _no_filter(query)
    return _listed(PROVIDER.resource_types, ResourceType, f"{base_url}/ResourceTypes")


def resource_type(base_url: str, type_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    _no_filter(query)
    for found in PROVIDER.resource_types:
        if found.id == type_id:
            return _located(found, f"{base_url}/ResourceTypes/{type_id}").model_dump()
    raise NotFoundException(detail=f"no resource type {type_id!r}; this service has User and Group")


def schemas(base_url: str, query: Mapping[str, str]) -> dict[str, Any]:
    _no_filter(query)
    return _listed(PROVIDER.schemas, Schema, f"{base_url}/Schemas")


def schema(base_url: str, schema_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    _no_filter(query)
    for found in PROVIDER.schemas:
        if found.id == schema_id:
            return _located(found, f"{base_url}/Schemas/{schema_id}").model_dump()
    raise NotFoundException(detail=f"no schema {schema_id!r}")

"""List and search requests (RFC 7644 §3.4.2, §3.4.3): filter, sort, startIndex/count paging.

A filter compiled exactly to SQL is answered by the database (count, order, offset, limit). One
SQL can only narrow is answered by re-checking each candidate with scim2-models' evaluator, and
so is a sortBy on an attribute without a column; at most `MAX_CANDIDATES` rows are read that
way, beyond which the request is refused with 400 tooMany (narrow the filter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from pydantic import ValidationError as PydanticValidationError
from scim2_models import (
    Context,
    ListResponse,
    NotImplementedException,
    Resource,
    ResponseParameters,
    ScimFilter,
    SearchRequest,
    TooManyException,
)
from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import Session

from grantflow.access.scim.filters import Catalog, Column, Compiled, compile_filter
from grantflow.access.scim.protocol import scim_exception
from grantflow.access.scim.resources import (
    DEFAULT_COUNT,
    MAX_CANDIDATES,
    MAX_RESULTS,
    POLICY,
)

# the query parameters of a search with GET (RFC 7644 §3.4.2)
PARAMETERS = (
    "attributes",
    "excludedAttributes",
    "filter",
    "sortBy",
    "sortOrder",
    "startIndex",
    "count",
    "cursor",
)

Render = Callable[[Session, Sequence[Any], str, bool], list[Resource[Any]]]


@dataclass(frozen=True)
class Kind:
    """A resource type as stored: its model, table, filter catalog and how rows render."""

    name: str  # "User"
    endpoint: str  # "Users"
    model: type[Resource[Any]]
    table: Any  # the ORM class
    alive: Callable[[], ColumnElement[bool]]  # rows served (not deleted)
    catalog: Catalog
    link: str  # the attribute naming the other side: a user's groups, a group's members
    render: Render  # (session, rows, base URL, with the link attribute) -> resources


def _validated(model: Any, payload: Mapping[str, Any], parameters: type[Any]) -> Any:
    try:
        return parameters[model].model_validate(
            dict(payload), scim_ctx=Context.SEARCH_REQUEST, scim_policy=POLICY
        )
    except PydanticValidationError as exc:
        raise scim_exception(exc) from None


def read_search(models: Sequence[type[Resource[Any]]], payload: Mapping[str, Any]) -> Any:
    """A search request (query parameters or a /.search body) for the given resource types."""
    model: Any = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
    request = _validated(model, payload, SearchRequest)
    if request.cursor is not None:
        raise NotImplementedException(
            detail="cursor pagination is not supported; page with startIndex and count"
        )
    return request


def read_response_parameters(model: type[Resource[Any]], query: Mapping[str, str]) -> Any:
    """The attributes / excludedAttributes query parameters of a single-resource request."""
    wanted = {k: query[k] for k in ("attributes", "excludedAttributes") if k in query}
    return _validated(model, wanted, ResponseParameters)


def wants(parameters: Any, attribute: str) -> bool:
    """Whether a response must carry `attribute` (a user's groups, a group's members), which
    costs a query; `excludedAttributes=members` is how Entra reads large groups."""

    def named(paths: Any) -> bool:
        return any(
            str(p).lower().rsplit(":", 1)[-1].split(".")[0] == attribute.lower() for p in paths
        )

    if parameters is None:
        return True
    if parameters.attributes:
        return named(parameters.attributes)
    if parameters.excluded_attributes:
        return not named(parameters.excluded_attributes)
    return True


def bound_filter(model: type[Resource[Any]], text: str) -> ScimFilter[Any]:
    """A filter bound to one resource type (its attributes resolved, ready to `match`)."""
    factory: Any = ScimFilter
    bound: ScimFilter[Any] = factory[model](text)
    return bound


@dataclass
class _Found:
    """The resources of one type a search matched: how many, and a way to read a slice."""

    total: int
    read: Callable[[int, int], list[Resource[Any]]]


def _sql_order(session: Session, kind: Kind, request: Any) -> list[Any] | None:
    """ORDER BY for the request, or None when the order must be computed in Python."""
    if request.sort_by is None:
        return [kind.table.id]
    binding = request.sort_binding(kind.model)
    if binding is None:
        return [kind.table.id]  # not an attribute of this type: no value, original order
    spec = kind.catalog.get(binding.urn.lower())
    if not isinstance(spec, Column) or not spec.exact:
        return None
    value: Any = spec.column
    if spec.kind == "string":
        if not binding.case_exact:
            value = func.lower(value)
        if session.get_bind().dialect.name == "postgresql":
            value = value.collate("C")  # code point order, as Python compares
    missing = spec.column.is_(None)
    if request.sort_order == SearchRequest.SortOrder.descending:
        # RFC 7644 §3.4.2.3: resources without a value come last ascending, first descending
        return [missing.desc(), value.desc(), kind.table.id]
    return [missing, value, kind.table.id]


def _find(session: Session, kind: Kind, request: Any, base_url: str, caller_sorts: bool) -> _Found:
    bound = bound_filter(kind.model, str(request.filter)) if request.filter else None
    compiled = compile_filter(bound, kind.catalog) if bound is not None else Compiled(true(), True)
    rows = select(kind.table).where(kind.alive(), compiled.clause)
    order = None if caller_sorts else _sql_order(session, kind, request)
    total = session.execute(select(func.count()).select_from(rows.subquery())).scalar_one()
    links = wants(request, kind.link)
    if compiled.exact and order is not None:

        def read(offset: int, limit: int) -> list[Resource[Any]]:
            page = session.execute(rows.order_by(*order).offset(offset).limit(limit)).scalars()
            return kind.render(session, list(page), base_url, links)

        return _Found(total, read)
    if total > MAX_CANDIDATES:
        raise TooManyException(
            detail=f"the filter leaves {total} {kind.endpoint} to check one by one (at most "
            f"{MAX_CANDIDATES}); add a condition on userName, externalId, id or displayName"
        )
    candidates = session.execute(rows.order_by(kind.table.id)).scalars().all()
    resources = kind.render(session, list(candidates), base_url, True)
    if bound is not None:
        resources = [r for r in resources if bound.match(r)]
    if not caller_sorts:
        resources = request.sort(resources)
    return _Found(len(resources), lambda offset, limit: resources[offset : offset + limit])


def search(session: Session, kinds: Sequence[Kind], request: Any, base_url: str) -> dict[str, Any]:
    """The ListResponse of a search over one resource type, or several (a search at the root:
    users first, then groups, unless sortBy orders them together)."""
    start = request.start_index or 1
    count = DEFAULT_COUNT if request.count is None else min(request.count, MAX_RESULTS)
    merge_sort = len(kinds) > 1 and request.sort_by is not None
    found = [_find(session, kind, request, base_url, merge_sort) for kind in kinds]
    page: list[Resource[Any]] = []
    if merge_sort:
        everything = request.sort([r for f in found for r in f.read(0, f.total)])
        page = everything[start - 1 : start - 1 + count]
    else:
        offset, remaining = start - 1, count
        for f in found:
            if remaining <= 0:
                break
            if offset < f.total:
                taken = f.read(offset, remaining)
                page.extend(taken)
                remaining -= len(taken)
            offset = max(0, offset - f.total)
    model: Any = kinds[0].model if len(kinds) == 1 else Union[tuple(k.model for k in kinds)]  # noqa: UP007
    dumps = [
        r.model_dump(
            scim_ctx=Context.RESOURCE_QUERY_RESPONSE,
            response_parameters=request,
            scim_policy=POLICY,
        )
        for r in page
    ]
    with POLICY:  # the dumps may hold attributes of schemas Grantflow does not declare
        response = ListResponse[model](
            total_results=sum(f.total for f in found),
            start_index=start,
            items_per_page=len(page),
            resources=dumps,
        )
    listed = response.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=POLICY)
    # an empty page still lists its (no) resources: Entra's matching reads "Resources": []
    listed.setdefault("Resources", [])
    return listed

"""SCIM filters (RFC 7644 §3.4.2.2) compiled to SQL.

scim2-models parses and validates a filter (`ScimFilter`) and can evaluate it on a resource
(`ScimFilter.match`). This module turns the parsed tree into a SQL predicate over the identity
and group tables, so a lookup like `userName eq "ada@example.com"` is one indexed query.

Every attribute Grantflow keeps in a column compiles exactly. Anything else (an attribute that
lives only in the pushed representation, such as `nickName` or `phoneNumbers.value`, a string
ordering, a value selection like `emails[type eq "work"]`) compiles to a predicate that can only
narrow the rows: the caller then re-checks each candidate with `ScimFilter.match`, so the answer
is always the one the RFC's semantics give on the served representation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scim2_models import InvalidFilterException, Returned, ScimFilter
from scim2_models.path import (
    AttributeBinding,
    CompareOperator,
    Comparison,
    FilterNode,
    FilterVisitor,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
    coerce_value,
)
from sqlalchemy import ColumnElement, Text, and_, cast, false, func, not_, or_, true


@dataclass(frozen=True)
class Compiled:
    """A SQL predicate; `exact` when it selects exactly the matching rows, otherwise it selects
    a superset that must be re-checked."""

    clause: ColumnElement[bool]
    exact: bool


UNKNOWN = Compiled(true(), False)  # SQL cannot tell: every row is a candidate
NEVER = Compiled(false(), True)

Compare = Callable[[CompareOperator, Any, bool], Compiled]


@dataclass(frozen=True)
class Column:
    """An attribute held in a column. `exact` is False when the representation may leave the
    attribute out while the column holds a value (then only positive tests can use SQL)."""

    column: Any
    kind: str  # "string", "boolean" or "datetime"
    exact: bool = True

    def compare(self, op: CompareOperator, value: Any, case_exact: bool) -> Compiled:
        if not self.exact and (value is None or op == CompareOperator.ne):
            # the representation may leave the attribute out while the column holds a value
            return UNKNOWN
        if value is None:
            if op == CompareOperator.eq:
                return Compiled(self.column.is_(None), True)
            if op == CompareOperator.ne:
                return Compiled(self.column.is_not(None), True)
            return NEVER
        if self.kind == "string":
            compiled = string_clause(self.column, op, value, case_exact)
        elif self.kind == "boolean":
            compiled = _ordered(self.column, op, value) if isinstance(value, bool) else UNKNOWN
        else:
            compiled = (
                _ordered(self.column, op, value) if isinstance(value, dt.datetime) else UNKNOWN
            )
        return Compiled(compiled.clause, compiled.exact and self.exact)

    def present(self) -> Compiled:
        clause = self.column.is_not(None)
        if self.kind == "string":
            clause = and_(clause, self.column != "")
        return Compiled(clause, self.exact)


@dataclass(frozen=True)
class Special:
    """An attribute compiled by hand (a membership, an email among several)."""

    compare_with: Compare
    present_with: Callable[[], Compiled] = lambda: UNKNOWN

    def compare(self, op: CompareOperator, value: Any, case_exact: bool) -> Compiled:
        return self.compare_with(op, value, case_exact)

    def present(self) -> Compiled:
        return self.present_with()


@dataclass(frozen=True)
class Constant:
    """An attribute every resource of the type has with the same value (meta.resourceType)."""

    value: str

    def compare(self, op: CompareOperator, value: Any, case_exact: bool) -> Compiled:
        if not isinstance(value, str):
            return NEVER
        left, right = (self.value, value) if case_exact else (self.value.lower(), value.lower())
        matched = {
            CompareOperator.eq: left == right,
            CompareOperator.ne: left != right,
            CompareOperator.co: right in left,
            CompareOperator.sw: left.startswith(right),
            CompareOperator.ew: left.endswith(right),
            CompareOperator.gt: left > right,
            CompareOperator.ge: left >= right,
            CompareOperator.lt: left < right,
            CompareOperator.le: left <= right,
        }[op]
        return Compiled(true() if matched else false(), True)

    def present(self) -> Compiled:
        return Compiled(true(), True)


Spec = Column | Special | Constant
# attribute URN (lower-cased, e.g. "urn:ietf:params:scim:schemas:core:2.0:user:username") -> spec
Catalog = Mapping[str, Spec]


def string_clause(column: Any, op: CompareOperator, value: Any, case_exact: bool) -> Compiled:
    if not isinstance(value, str):
        return UNKNOWN
    if not case_exact and not value.isascii():
        return _non_ascii(column, op, value)
    left = column if case_exact else func.lower(column)
    right = value if case_exact else value.lower()
    present = column.is_not(None)
    if op == CompareOperator.eq:
        return Compiled(and_(present, left == right), True)
    if op == CompareOperator.ne:
        return Compiled(or_(column.is_(None), left != right), True)
    matchers = {
        CompareOperator.co: left.contains,
        CompareOperator.sw: left.startswith,
        CompareOperator.ew: left.endswith,
    }
    if op in matchers:
        # LIKE ignores ASCII case on SQLite: exact only where the attribute does too
        return Compiled(and_(present, matchers[op](right, autoescape=True)), not case_exact)
    # string ordering follows the database collation, not the code points: let Python order
    return UNKNOWN


_LIKE_ESCAPE = "/"


def _non_ascii(column: Any, op: CompareOperator, value: str) -> Compiled:
    """A case-insensitive test of a value with non-ASCII letters, which lower() may not fold
    (SQLite folds ASCII only): each non-ASCII character matches any character in SQL, and the
    candidates are then compared in Python."""
    patterns = {
        CompareOperator.eq: "{}",
        CompareOperator.sw: "{}%",
        CompareOperator.ew: "%{}",
        CompareOperator.co: "%{}%",
    }
    if op not in patterns:
        return UNKNOWN
    parts = []
    for char in value.lower():
        if not char.isascii():
            parts.append("_")
        elif char in "%_" + _LIKE_ESCAPE:
            parts.append(_LIKE_ESCAPE + char)
        else:
            parts.append(char)
    pattern = patterns[op].format("".join(parts))
    return Compiled(func.lower(column).like(pattern, escape=_LIKE_ESCAPE), False)


def _ordered(column: Any, op: CompareOperator, value: Any) -> Compiled:
    present = column.is_not(None)
    comparisons: dict[CompareOperator, Callable[[], ColumnElement[bool]]] = {
        CompareOperator.eq: lambda: and_(present, column == value),
        CompareOperator.ne: lambda: or_(column.is_(None), column != value),
        CompareOperator.gt: lambda: and_(present, column > value),
        CompareOperator.ge: lambda: and_(present, column >= value),
        CompareOperator.lt: lambda: and_(present, column < value),
        CompareOperator.le: lambda: and_(present, column <= value),
    }
    build = comparisons.get(op)
    return Compiled(build(), True) if build else UNKNOWN


def text_contains(json_column: Any, value: str) -> ColumnElement[bool] | None:
    """A predicate true for every row whose JSON column holds `value` (ignoring ASCII case)
    somewhere, or None when the value's JSON spelling could differ from the text itself."""
    if not value.isascii() or any(c in value for c in '"\\') or not value.isprintable():
        return None
    return func.lower(cast(json_column, Text)).contains(value.lower(), autoescape=True)


def _key(binding: AttributeBinding) -> str:
    return binding.urn.lower()


class SqlFilter(FilterVisitor[Compiled]):
    """Compile a filter bound to one model against the columns of its catalog."""

    def __init__(self, scim_filter: ScimFilter[Any], catalog: Catalog) -> None:
        self.filter = scim_filter
        self.catalog = catalog

    def visit_logical_expr(self, node: LogicalExpr) -> Compiled:
        terms = [self.visit(term) for term in node.terms]
        join = and_ if node.op == LogicalOperator.and_ else or_
        return Compiled(join(*(t.clause for t in terms)), all(t.exact for t in terms))

    def visit_not(self, node: Not) -> Compiled:
        inner = self.visit(node.expr)
        # the complement of a superset says nothing: only an exact predicate can be negated
        return Compiled(not_(inner.clause), True) if inner.exact else UNKNOWN

    def visit_present(self, node: Present) -> Compiled:
        binding = self.filter.resolve(node.attr_path, strict=False)
        if binding is None:
            return NEVER  # an attribute of another resource type (a search at the root)
        _refuse_hidden(binding)
        # `members pr` tests the values of a multi-valued attribute
        spec = self.catalog.get(_key(binding)) or self.catalog.get(f"{_key(binding)}.value")
        return spec.present() if spec is not None else UNKNOWN

    def visit_comparison(self, node: Comparison) -> Compiled:
        binding = self.filter.resolve_comparison(node.attr_path, strict=False)
        if binding is None:
            return NEVER
        _refuse_hidden(binding)
        spec = self.catalog.get(_key(binding))
        if spec is None:
            return UNKNOWN
        value = coerce_value(binding, node.value, node.op)
        return spec.compare(node.op, value, binding.case_exact)

    def visit_value_path(self, node: ValuePath) -> Compiled:
        binding = self.filter.resolve(node.attr_path, strict=False)
        if binding is None:
            return NEVER
        _refuse_hidden(binding)
        # members[value eq "..."] compiles as members.value eq "..."
        spec = self.catalog.get(f"{_key(binding)}.value")
        if spec is None or not _only_value(node.val_filter):
            return UNKNOWN
        compiled = _ValueFilter(spec, self.filter, node).visit(node.val_filter)
        return compiled


def _only_value(node: FilterNode) -> bool:
    """Whether a value filter tests the `value` sub-attribute only."""
    if isinstance(node, Comparison | Present):
        return node.attr_path.attr.lower() == "value" and node.attr_path.sub_attr is None
    if isinstance(node, Not):
        return False  # "no value is x" and "some value is not x" differ
    if isinstance(node, LogicalExpr):
        return node.op == LogicalOperator.or_ and all(_only_value(t) for t in node.terms)
    return False


class _ValueFilter(FilterVisitor[Compiled]):
    """The inner filter of `attr[value op "x" or value op "y"]`, on the attribute's values."""

    def __init__(self, spec: Spec, scim_filter: ScimFilter[Any], node: ValuePath) -> None:
        self.spec = spec
        self.filter = scim_filter
        self.node = node

    def visit_comparison(self, node: Comparison) -> Compiled:
        attr = node.attr_path
        path = type(attr)(
            attr=self.node.attr_path.attr, sub_attr="value", uri=self.node.attr_path.uri
        )
        binding = self.filter.resolve_comparison(path, strict=False)
        if binding is None:
            return NEVER
        return self.spec.compare(
            node.op, coerce_value(binding, node.value, node.op), binding.case_exact
        )

    def visit_present(self, node: Present) -> Compiled:
        return self.spec.present()

    def visit_logical_expr(self, node: LogicalExpr) -> Compiled:
        terms = [self.visit(term) for term in node.terms]
        return Compiled(or_(*(t.clause for t in terms)), all(t.exact for t in terms))

    def visit_not(self, node: Not) -> Compiled:
        return UNKNOWN

    def visit_value_path(self, node: ValuePath) -> Compiled:
        return UNKNOWN


def _refuse_hidden(binding: AttributeBinding) -> None:
    """RFC 7643 §4.1.1: the password is never returned, so no filter may test it."""
    if binding.model.get_field_annotation(binding.field_name, Returned) == Returned.never:
        raise InvalidFilterException(
            detail=f"{binding.urn.rsplit(':', 1)[-1]} is never returned and cannot be filtered on"
        )


def compile_filter(scim_filter: ScimFilter[Any], catalog: Catalog) -> Compiled:
    """The SQL predicate of a filter bound to one model (`ScimFilter[Model]`)."""
    return SqlFilter(scim_filter, catalog).visit(scim_filter.ast)

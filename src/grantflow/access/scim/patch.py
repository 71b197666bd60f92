"""PATCH (RFC 7644 §3.5.2): operations applied to the served representation.

scim2-models applies the operations on declared attributes, valuePath filters included
(`emails[type eq "work"].value`, `members[value eq "<id>"]`). Operations on attributes of
schemas Grantflow does not declare (an IdP's custom extension,
`urn:...:CustomExtension:2.0:User:badge`) are applied here to the attributes kept as pushed, so
they round-trip through PATCH as they do through POST and PUT. The request is one transaction:
an operation that fails leaves nothing changed.
"""

from __future__ import annotations

import copy
from typing import Any

from scim2_models import (
    InvalidPathException,
    InvalidValueException,
    PatchOp,
    PatchOperation,
    Path,
    Resource,
    SCIMException,
)

from grantflow.access.scim.resources import POLICY

_MAX_DEPTH = 3


def _declared(model: type[Resource[Any]], text: str) -> bool:
    """Whether a path names an attribute (or extension) of the model."""
    factory: Any = Path
    try:
        path = factory[model](text)
    except (InvalidPathException, ValueError):
        return False
    return path.model is not None or path.resolve() is not None


def _matching(mapping: dict[str, Any], key: str) -> str:
    """The existing key equal to `key` ignoring case (attribute names are case-insensitive)."""
    return next((k for k in mapping if k.lower() == key.lower()), key)


def _target(resource: Resource[Any], text: str) -> tuple[str, list[str]]:
    """The top-level key and sub-keys an undeclared path designates."""
    if "[" in text or len(text) > 500:
        raise InvalidPathException(
            path=text, detail=f"{text!r}: filters only apply to attributes of declared schemas"
        )
    unknown = resource.unknown_attributes
    listed = {s.lower() for s in resource.schemas or []}
    if text.lower().startswith("urn:"):
        if text.lower() in listed or text.lower() in {k.lower() for k in unknown}:
            return _matching(unknown, text), []
        head, _, attribute = text.rpartition(":")
        return _matching(unknown, head), attribute.split(".")
    first, *rest = text.split(".")
    return _matching(unknown, first), rest


def _write(container: dict[str, Any], key: str, op: str, value: Any) -> None:
    key = _matching(container, key)
    if op == "remove":
        container.pop(key, None)
    elif op == "add" and isinstance(container.get(key), list):
        container[key] = [*container[key], *(value if isinstance(value, list) else [value])]
    elif op == "add" and isinstance(container.get(key), dict) and isinstance(value, dict):
        container[key] = {**container[key], **value}
    else:
        container[key] = value


def _apply_undeclared(resource: Resource[Any], op: str, text: str, value: Any) -> None:
    top, keys = _target(resource, text)
    if len(keys) > _MAX_DEPTH:
        raise InvalidPathException(path=text, detail=f"{text!r} is nested too deeply")
    unknown = resource.unknown_attributes
    if top.lower().startswith("urn:") and op != "remove":
        # the attributes of an extension are listed under its schema (RFC 7643 §3)
        listed = {s.lower() for s in resource.schemas or []}
        if top.lower() not in listed:
            resource.schemas = [*(resource.schemas or []), top]
    if not keys:
        _write(unknown, top, op, value)
        return
    node = unknown
    for key in [top, *keys[:-1]]:
        key = _matching(node, key)
        if op == "remove" and not isinstance(node.get(key), dict):
            return  # nothing there to remove
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InvalidPathException(path=text, detail=f"{text!r}: {key} is not complex")
        node = child
    _write(node, keys[-1], op, value)


def _split(
    model: type[Resource[Any]], operation: PatchOperation[Any]
) -> tuple[PatchOperation[Any] | None, list[tuple[str, Any]]]:
    """The part of an operation scim2-models applies, and the (path, value) writes to attributes
    no schema of the model declares."""
    op = str(operation.op.value)
    if operation.path is not None:
        text = str(operation.path)
        if text and not _declared(model, text):
            return None, [(text, operation.value)]
        return operation, []
    value = operation.value
    if not isinstance(value, dict):
        return operation, []
    declared = {k: v for k, v in value.items() if k.lower() == "schemas" or _declared(model, k)}
    undeclared = [(k, v) for k, v in value.items() if k not in declared]
    if not undeclared:
        return operation, []
    if not any(k.lower() != "schemas" for k in declared):
        return None, undeclared
    kept = operation.model_copy(update={"value": declared})
    return kept if op != "remove" else operation, undeclared


def apply_patch(operations: PatchOp[Any], resource: Resource[Any]) -> bool:
    """Apply the operations in order, in place; whether anything changed."""
    model = type(resource)
    before = copy.deepcopy((resource.unknown_attributes, resource.schemas))
    modified = False
    factory: Any = PatchOp
    for operation in operations.operations or []:
        declared, undeclared = _split(model, operation)
        try:
            if declared is not None:
                single = factory[model](operations=[declared])
                modified = single.patch(resource, scim_policy=POLICY) or modified
        except SCIMException:
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidValueException(detail=str(exc)) from None
        for text, value in undeclared:
            _apply_undeclared(resource, str(operation.op.value), text, value)
    return modified or before != (resource.unknown_attributes, resource.schemas)

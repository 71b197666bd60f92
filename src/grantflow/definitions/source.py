"""Reading documents from YAML or JSON text, and writing the canonical YAML that is diffed."""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

import yaml

from grantflow.errors import BadRequest, PayloadTooLarge, ValidationError
from grantflow.strict import MAX_JSON_DEPTH

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


# libyaml's parser when installed: several times faster, and a large document holds the
# interpreter (and so the API's other requests) for that much less
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_MAX_BYTES = 1024 * 1024  # GRANTFLOW_MAX_BODY_BYTES' default


def parse_text(
    text: str | bytes, *, name: str = "document", max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """YAML (of which JSON is a subset) to plain data; a syntax error names line and column.
    Aliases count at their expanded size, so a small document cannot expand past `max_bytes`
    (an alias bomb); an alias inside its own anchor (a cycle) is refused; nesting deeper than
    JSON bodies may (MAX_JSON_DEPTH) is refused as it is for them, before anything is built."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, name, max(max_bytes, len(text)))
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own cap (1,000 levels)
            raise _too_deep(name, mark.line + 1 if mark else None) from None
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadRequest(
            f"{name}: not valid YAML or JSON{where}: {exc.problem}",
            code="malformed_document",
            next_action="fix the syntax (a YAML linter shows the exact spot)",
        ) from None
    except yaml.YAMLError as exc:
        raise BadRequest(
            f"{name}: not valid YAML or JSON: {exc}", code="malformed_document"
        ) from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, name: str, limit: int) -> None:
    """The size the document has once every alias is expanded (about its JSON size), counted
    without expanding it: each node's size is computed once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int = 0) -> int:
        if depth > MAX_JSON_DEPTH:
            raise _too_deep(name, node.start_mark.line + 1)
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise BadRequest(
                f"{name}: a YAML alias refers to its own anchor (line {node.start_mark.line + 1}"
                "), which would make the document infinite",
                code="malformed_document",
                next_action="remove the self-referencing alias",
            )
        open_nodes.add(key)
        if isinstance(node, yaml.ScalarNode):
            total = len(node.value) + 2
        elif isinstance(node, yaml.SequenceNode):
            total = 2 + sum(size(item, depth + 1) + 1 for item in node.value)
        else:
            total = 2 + sum(size(k, depth + 1) + size(v, depth + 1) + 2 for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        if total > limit:
            raise PayloadTooLarge(
                f"{name}: its YAML aliases expand it to more than {limit:,} bytes, over the "
                "document limit (setting GRANTFLOW_MAX_BODY_BYTES)",
                code="document_too_large",
                next_action="write the repeated parts out, or use fewer aliases",
            )
        return total

    size(root)


def _too_deep(name: str, line: int | None) -> ValidationError:
    """The refusal of a JSON body nested too deep (`strict.MAX_JSON_DEPTH`), for YAML."""
    message = f"is nested more than {MAX_JSON_DEPTH} levels deep"
    where = f" (at line {line})" if line else ""
    return ValidationError(
        f"{name}: {message}{where}",
        details=[{"field": name, "message": message, "type": "too_deep"}],
        next_action="write flatter data",
    )


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def content_hash(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def unified_diff(old: dict[str, Any], new: dict[str, Any], old_label: str, new_label: str) -> str:
    return "".join(
        difflib.unified_diff(
            to_yaml(old).splitlines(keepends=True),
            to_yaml(new).splitlines(keepends=True),
            fromfile=old_label,
            tofile=new_label,
        )
    )

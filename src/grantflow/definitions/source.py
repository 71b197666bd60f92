"""Reading documents from YAML or JSON text, and writing the canonical YAML that is diffed."""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

import yaml

from grantflow.errors import BadRequest

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


def parse_text(text: str | bytes, *, name: str = "document") -> Any:
    """YAML (of which JSON is a subset) to plain data; a syntax error names line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
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
    except RecursionError:
        raise BadRequest(f"{name}: nested too deeply", code="malformed_document") from None


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

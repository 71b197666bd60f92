"""Reading the files commands are given, and writing the ones they produce, with errors that
name the option."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from grantflow.errors import BadRequest


def read_text(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BadRequest(f"{option}: cannot read {path}: {reason}") from None


def read_any(path: Path, option: str) -> Any:
    """A YAML or JSON document, as parsed (any shape)."""
    from grantflow.definitions.source import parse_text

    return parse_text(read_text(path, option), name=str(path))


def read_document(path: Path, option: str) -> dict[str, Any]:
    """A YAML or JSON mapping."""
    data = read_any(path, option)
    if not isinstance(data, dict):
        raise BadRequest(f"{option}: {path} must hold a mapping (an object)")
    return data


def write_atomically(path: Path, content: bytes, option: str = "--output") -> None:
    """All or nothing: a temporary file in the same directory, renamed over the target."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise BadRequest(f"{option}: cannot write in {directory}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise BadRequest(f"{option}: cannot write {path}: {exc.strerror}") from None


def multipart(
    fields: dict[str, str], name: str, filename: str, kind: str, data: bytes
) -> tuple[bytes, str]:
    """A multipart/form-data body with text fields and one file; and its content type."""
    boundary = "grantflow-" + secrets.token_hex(16)
    quoted = filename.replace("\\", "\\\\").replace('"', "%22")
    quoted = quoted.replace("\r", "").replace("\n", "")
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{quoted}"\r\n'
        f"Content-Type: {kind}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"

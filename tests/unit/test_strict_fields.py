"""Every request model reads values strictly: no boolean as an integer, no number as a time."""

from __future__ import annotations

import base64
import datetime as dt
import os
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, params
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, Strict
from pydantic.functional_validators import BeforeValidator
from sqlalchemy.engine import make_url

from grantflow import strict
from grantflow.api import create_app
from grantflow.config import load_settings
from grantflow.definitions.document import WorkflowDocument
from grantflow.store.database import open_database

_NUMBERS = (int, bool, float)
_TIMES = (dt.datetime, dt.date, AwareDatetime)


def _loose(tp: Any, where: str, meta: tuple[Any, ...], seen: set[type], out: list[str]) -> None:
    """Collect in `out` every field under `tp` that reads a number or a time leniently."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(tp)
        _loose(base, where, meta + tuple(extra), seen, out)
    elif origin in (typing.Union, types.UnionType, list, dict, set, tuple):
        for arg in typing.get_args(tp):
            _loose(arg, where, meta, seen, out)
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp not in seen:
            seen.add(tp)
            for name, field in tp.model_fields.items():
                _loose(field.annotation, f"{tp.__name__}.{name}", tuple(field.metadata), seen, out)
    elif tp in _NUMBERS and not any(isinstance(m, Strict) for m in meta):
        out.append(f"{where}: {tp.__name__}")
    elif tp in _TIMES and not any(
        isinstance(m, BeforeValidator) and m.func in strict.TEXT_ONLY for m in meta
    ):
        out.append(f"{where}: {getattr(tp, '__name__', tp)}")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    """The app's routes (the database is never touched)."""
    url = f"sqlite:///{tmp_path / 'unused.db'}"
    database = open_database(make_url(url))
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    yield create_app(
        load_settings(database_url=url, secret_key=key, secret_key_file=tmp_path / "k"), database
    )
    database.dispose()


def _routes(app: FastAPI) -> list[APIRoute]:
    return [r for r in app.routes if isinstance(r, APIRoute)]


def test_request_bodies_and_documents_read_numbers_and_times_strictly(app: FastAPI) -> None:
    """No API body field (nor workflow document field) is a lax int, bool, float or time."""
    loose: list[str] = []
    seen: set[type] = set()
    for route in _routes(app):
        for param in route.dependant.body_params:
            if isinstance(param.field_info, params.Form):
                continue  # a console form's fields are text, read like a query string's
            _loose(param.field_info.annotation, f"{route.path} body", (), seen, loose)
    _loose(WorkflowDocument, "document", (), seen, loose)
    assert loose == []


def test_query_times_are_text_only(app: FastAPI) -> None:
    """A time in a query string is RFC 3339 text: `until=0.5` is refused, not read as 1970."""
    loose: list[str] = []
    for route in _routes(app):
        for param in route.dependant.query_params:
            found: list[str] = []
            _loose(param.field_info.annotation, f"{route.path}?{param.name}", (), set(), found)
            loose += [f for f in found if not f.endswith((": int", ": bool", ": float"))]
    assert loose == []


def test_integer_path_and_query_parameters_are_bounded(app: FastAPI) -> None:
    """An integer parameter has an upper bound a database column can hold (no 10**30)."""
    unbounded = []
    for route in _routes(app):
        for param in [*route.dependant.path_params, *route.dependant.query_params]:
            if param.field_info.annotation not in (int, int | None):
                continue
            bounds = [m.le for m in param.field_info.metadata if hasattr(m, "le")]
            if not bounds or bounds[0] > strict.MAX_INT:
                unbounded.append(f"{route.path}: {param.name}")
    assert unbounded == []

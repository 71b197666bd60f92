"""Advice: the one table mapping a failure code or waiting reason to its class, the words of
its next action and the operation that performs it, and the rendering of that operation for a
concrete object. The engine, the run detail, grants, the API, the CLI and the console all take
their next actions from here.

May import auth (permissions) only; the engine and the access layer import it."""

from __future__ import annotations

from grantflow.advice.decide import Situation, advise, choose, key_for, render
from grantflow.advice.operations import OPERATIONS, Operation, Subject
from grantflow.advice.table import TABLE, Advice, check_table

__all__ = [
    "OPERATIONS",
    "TABLE",
    "Advice",
    "Operation",
    "Situation",
    "Subject",
    "advise",
    "check_table",
    "choose",
    "key_for",
    "render",
]

"""The REST API under /api/v1: app factory, one router per resource, the one error handler.

Routes are thin: they parse, call one service function, and shape the response.
"""

from __future__ import annotations

from grantflow.api.app import create_app

__all__ = ["create_app"]

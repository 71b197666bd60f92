"""One router per resource; each carries its full path prefix."""

from __future__ import annotations

API_PREFIX = "/api/v1"

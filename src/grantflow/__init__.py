"""Grantflow: access automation and identity-lifecycle workflows, run durably."""

from __future__ import annotations

__version__ = "0.1.0"

"""The `grantflow` command line: typer commands that are thin callers of the service functions.

Commands talk to the database named by the configuration, so they work without a running server.
"""

from __future__ import annotations

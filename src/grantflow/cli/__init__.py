"""The `grantflow` command line: typer commands that are thin callers of the REST API.

Data commands go through `client` (a server over HTTP, or the API app inside the process on the
local database); the commands that run Grantflow or set up its database (`server`, `keys`,
`users create-admin`, `audit verify | checkpoint`) open the database through `direct`.
Sub-commands load on use (`lazy`): `grantflow --help` imports none of them.
"""

from __future__ import annotations

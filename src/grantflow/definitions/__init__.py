"""Workflow definitions: the document models, sandboxed expressions, the publish gate, the plan
compiler, versions and dry-run.

May import `grantflow.store`, `grantflow.audit`, `grantflow.auth`, `grantflow.access`,
`grantflow.steps` (step types: config models and previews), `grantflow.errors`.
"""

from __future__ import annotations

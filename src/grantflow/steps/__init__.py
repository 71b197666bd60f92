"""Step types, one module each: config model, side-effect rule, dry-run preview (and, with the
engine, the executor). Types are plugins found through the `grantflow.steps` entry points.

May import `grantflow.definitions.expressions`, `grantflow.durations`, `grantflow.errors`,
`grantflow.connections` (to reach applications through their connections).
"""

from __future__ import annotations

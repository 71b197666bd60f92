"""Governance over Grantflow's own inventory: access reviews (certification campaigns), control
evaluation and reports — each run by hand or as a built-in job (`access_review`,
`control_evaluation`, `report`) whose runner registers itself with `schedules.runners`.

May import the service packages it reads and acts on (`access`, `auth`, `audit`, `connections`,
`definitions`, `engine`, `people`, `queue`, `store`) and, of `schedules`, only `runners` and
`models` (to register its runners and read jobs). `schedules/` never imports this package:
`runners` names its modules and loads one when a job of that kind first runs. The API, the
console and the store's schema (its tables) import it.
"""

from __future__ import annotations

"""Safety: signed inbound webhooks, connection rate limits shared by every worker, breakers
that pause a workflow, spend caps, and the abuse limits that stop oversized or endless work.

May import `grantflow.store`, `grantflow.config`, `grantflow.errors`, `grantflow.auth`,
`grantflow.audit`, `grantflow.definitions`, `grantflow.engine` (its models, states, run starts)
and `grantflow.people.notifications`. The engine calls into `safety.gate` at step boundaries.
"""

from __future__ import annotations

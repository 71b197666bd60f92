"""The durable engine: the run state machine, the interpreter that advances runs step by step,
retry policy, timeouts and stuck detection, and the run operations (retry, replay, cancel, pause).

May import `grantflow.store`, `grantflow.audit`, `grantflow.auth`, `grantflow.definitions`,
`grantflow.steps`, `grantflow.queue`, `grantflow.errors`.
"""

from __future__ import annotations

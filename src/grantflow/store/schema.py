"""The whole schema: importing this module registers every subsystem's tables on `Base.metadata`."""

from __future__ import annotations

from grantflow.access import models as access_models
from grantflow.audit import models as audit_models
from grantflow.auth import models as auth_models
from grantflow.connections import models as connections_models
from grantflow.definitions import models as definitions_models
from grantflow.engine import models as engine_models
from grantflow.governance import models as governance_models
from grantflow.people import models as people_task_models
from grantflow.people import notifications as people_models
from grantflow.queue import models as queue_models
from grantflow.safety import models as safety_models
from grantflow.schedules import models as schedules_models
from grantflow.store.base import Base

metadata = Base.metadata

__all__ = [
    "access_models",
    "audit_models",
    "auth_models",
    "connections_models",
    "definitions_models",
    "engine_models",
    "governance_models",
    "metadata",
    "people_models",
    "people_task_models",
    "queue_models",
    "safety_models",
    "schedules_models",
]

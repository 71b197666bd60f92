"""The sandbox: local targets the demo workspace's workflows really call, so a newcomer can watch
a run succeed without any account anywhere.

`grantflow serve --sandbox` (or `GRANTFLOW_SANDBOX=true`) starts two servers on 127.0.0.1 in the
serving process, in memory (a restart empties them):

- a SaaS-like HTTP API (`saas.py`, port `GRANTFLOW_SANDBOX_PORT`): a mailer (`POST /send`), a
  wiki's members, and stand-ins for the few Microsoft Graph, Okta and Google Directory calls the
  example workflows make — one directory of accounts seen through each provider's calls. It is
  not an emulator of those products: anything else answers 404.
- a SCIM 2.0 server (`scim.py`, port `GRANTFLOW_SANDBOX_SCIM_PORT`) built on the `scim2-server`
  library (the optional extra `sandbox`), holding the groups Engineering, Finance, Research and
  Sales.

Both accept one credential, derived from the master key (`sandbox_token`), so the demo
workspace can store it on its connections without anyone copying it. The outbound guard allows
exactly these two address:port pairs while the sandbox runs (`endpoints`), not all of loopback.

This module imports nothing heavy: `connections.outbound` and `demo` read the addresses from it;
the servers load (and need the extra) only when started (`servers.start_sandbox`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grantflow.config import Settings

HOST = "127.0.0.1"  # never another interface: the sandbox has no real security
SCIM_GROUPS = ("Engineering", "Finance", "Research", "Sales")


def endpoints(settings: Settings) -> list[tuple[str, int]]:
    """The (address, port) pairs the sandbox listens on."""
    return [(HOST, settings.sandbox_port), (HOST, settings.sandbox_scim_port)]


def saas_url(settings: Settings) -> str:
    return f"http://{HOST}:{settings.sandbox_port}"


def scim_url(settings: Settings) -> str:
    return f"http://{HOST}:{settings.sandbox_scim_port}/v2"


def sandbox_token(master_key: bytes) -> str:
    """The credential the sandbox accepts: the same in `grantflow demo` and `grantflow serve`,
    and useless anywhere else."""
    digest = hmac.new(master_key, b"grantflow sandbox credential", hashlib.sha256).hexdigest()
    return f"sbx_{digest[:40]}"

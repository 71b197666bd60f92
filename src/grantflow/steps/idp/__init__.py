"""Identity-provider profiles over HTTP: Microsoft Entra ID (Graph), Okta and Google Workspace
(Directory API). One module per provider: its step kinds, their config models, and the
provider's documented errors mapped to failure classes with a next action."""

from __future__ import annotations

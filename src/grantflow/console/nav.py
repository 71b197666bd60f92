"""The console's navigation: one entry per area, shown to users holding its permission once
the area's page exists (pages are added area by area)."""

from __future__ import annotations

from dataclasses import dataclass

from grantflow.auth.permissions import Permission


@dataclass(frozen=True)
class NavEntry:
    label: str
    path: str
    permission: Permission


NAV = [
    NavEntry("Home", "/", Permission.SELF),
    NavEntry("Inbox", "/inbox", Permission.SELF),
    NavEntry("Runs", "/runs", Permission.RUN_READ),
    NavEntry("Workflows", "/workflows", Permission.WORKFLOW_READ),
    NavEntry("Identities", "/identities", Permission.IDENTITY_READ),
    NavEntry("Grants", "/grants", Permission.GRANT_READ),
    NavEntry("Connections", "/connections", Permission.CONNECTION_READ),
    NavEntry("Jobs", "/jobs", Permission.JOB_READ),
    NavEntry("Reviews", "/reviews", Permission.JOB_READ),
    NavEntry("Controls", "/controls", Permission.JOB_READ),
    NavEntry("Usage", "/usage", Permission.WORKFLOW_READ),
    NavEntry("Incidents", "/incidents", Permission.INCIDENT_READ),
    NavEntry("Audit", "/audit", Permission.AUDIT_READ),
    NavEntry("Users", "/users", Permission.USER_ADMIN),
    NavEntry("Tokens", "/tokens", Permission.SELF),
]


def visible(paths: set[str], can: object) -> list[NavEntry]:
    """The entries whose page exists and that `can(permission)` allows."""
    assert callable(can)
    return [entry for entry in NAV if entry.path in paths and can(entry.permission)]

"""Permissions, roles, and which role grants which permission."""

from __future__ import annotations

import enum


class Permission(enum.StrEnum):
    """A right checked on every route; routes declare exactly one (deny by default)."""

    WORKFLOW_READ = "workflow:read"  # see workflows, versions, plans
    WORKFLOW_EDIT = "workflow:edit"  # create workflows and edit drafts
    WORKFLOW_PUBLISH = "workflow:publish"  # publish, activate, disable versions
    WORKFLOW_TASK = "workflow:task"  # act on approvals and human tasks
    RUN_READ = "run:read"  # see runs and their timelines
    RUN_OPERATE = "run:operate"  # start, retry, replay, cancel, pause runs
    TASK_REASSIGN = "task:reassign"  # reassign approvals and tasks to other people
    CONNECTION_READ = "connection:read"  # see applications and connections
    CONNECTION_WRITE = "connection:write"  # change applications and connections
    CREDENTIAL_WRITE = "credential:write"  # set or replace secrets (never read them)
    IDENTITY_READ = "identity:read"  # see identities and groups
    IDENTITY_WRITE = "identity:write"  # create, import, change identities; SCIM tokens
    GRANT_READ = "grant:read"  # see grants, lifecycle events, reconciliation reports
    GRANT_WRITE = "grant:write"  # grant, revoke and extend access
    RECONCILE = "access:reconcile"  # compare a target's accounts with the grants
    INCIDENT_READ = "incident:read"  # see security incidents
    INCIDENT_MANAGE = "incident:manage"  # resolve security incidents
    EVIDENCE_WRITE = "evidence:write"  # add audit notes and evidence files to runs
    JOB_READ = "job:read"  # see jobs, occurrences, reviews, control results, reports
    JOB_MANAGE = "job:manage"  # create, pause, resume, run jobs; start and close reviews
    AUDIT_READ = "audit:read"  # read and export the audit log
    USER_ADMIN = "user:admin"  # manage users, roles and other people's tokens
    SELF = "self"  # any authenticated user, on their own profile and tokens


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything
    EDITOR = "editor"  # authors workflows and connections
    OPERATOR = "operator"  # watches and fixes runs
    APPROVER = "approver"  # decides approvals and tasks
    AUDITOR = "auditor"  # reads everything, changes nothing
    VIEWER = "viewer"  # reads workflows, runs and applications


_READ = {
    Permission.WORKFLOW_READ,
    Permission.RUN_READ,
    Permission.CONNECTION_READ,
    Permission.IDENTITY_READ,
    Permission.GRANT_READ,
    Permission.INCIDENT_READ,
    Permission.JOB_READ,
    Permission.SELF,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.EDITOR: frozenset(
        _READ
        | {
            Permission.WORKFLOW_EDIT,
            Permission.WORKFLOW_PUBLISH,
            Permission.CONNECTION_WRITE,
            Permission.CREDENTIAL_WRITE,
        }
    ),
    Role.OPERATOR: frozenset(
        _READ
        | {
            Permission.RUN_OPERATE,
            # the manual steps of runs (human tasks routed to operators, e.g. a system
            # without a connector) — only tasks assigned to them or their role
            Permission.WORKFLOW_TASK,
            Permission.TASK_REASSIGN,
            Permission.GRANT_WRITE,
            Permission.IDENTITY_WRITE,
            Permission.RECONCILE,
            Permission.INCIDENT_MANAGE,
            Permission.EVIDENCE_WRITE,
            Permission.JOB_MANAGE,
        }
    ),
    Role.APPROVER: frozenset(_READ | {Permission.WORKFLOW_TASK}),
    Role.AUDITOR: frozenset(_READ | {Permission.AUDIT_READ}),
    Role.VIEWER: frozenset(_READ),
}


def permissions_for(roles: list[str] | list[Role]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(Role(role), frozenset())
    return frozenset(granted)

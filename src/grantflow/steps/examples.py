"""One example step per built-in step type, as an author writes it in a workflow document.

The step-type reference (docs/reference/steps.md) shows these; a test validates each against
its type's config model and the workflow schema, so an example can never show a setting the
type refuses.
"""

from __future__ import annotations

from typing import Any

_ID = "{{ steps.create_user.output.user_id }}"

EXAMPLES: dict[str, dict[str, Any]] = {
    "approval": {
        "id": "manager_approval",
        "type": "approval",
        "config": {
            "title": "Approve {{ grant.role }} on {{ application.name }} for {{ identity.email }}",
            "approvers": {"users": ["{{ identity.manager.email }}"]},
            "require_justification": True,
            "timeout": "2d",
            "remind_before": "1d",
            "on_timeout": "escalate",
            "escalate_to": {"roles": ["approver"]},
        },
    },
    "condition": {
        "id": "is_contractor",
        "type": "condition",
        "branches": [
            {"when": "identity.attributes.employment_type == 'contractor'", "next": "ask_it"}
        ],
        "next": "create_user",
    },
    "delay": {"id": "wait_for_start", "type": "delay", "config": {"until": "{{ input.start }}"}},
    "entra.add_group_member": {
        "id": "add_to_sales",
        "type": "entra.add_group_member",
        "config": {"connection": "entra", "group_id": "{{ input.group_id }}", "user_id": _ID},
        "reversible": True,
    },
    "entra.assign_license": {
        "id": "assign_licence",
        "type": "entra.assign_license",
        "config": {
            "connection": "entra",
            "user_id": _ID,
            "sku_id": "6fd2c87f-b296-42f0-b197-1e91e994b900",
        },
        "reversible": True,
    },
    "entra.create_user": {
        "id": "create_user",
        "type": "entra.create_user",
        "config": {
            "connection": "entra",
            "user_principal_name": "{{ identity.email }}",
            "display_name": "{{ identity.display_name }}",
            "department": "{{ identity.department }}",
            "usage_location": "GB",
        },
        "retry": {"max_attempts": 5, "initial_backoff": "2s"},
    },
    "entra.disable_account": {
        "id": "disable",
        "type": "entra.disable_account",
        "config": {"connection": "entra", "user_id": "{{ identity.email }}"},
    },
    "entra.revoke_sessions": {
        "id": "sign_out",
        "type": "entra.revoke_sessions",
        "config": {"connection": "entra", "user_id": "{{ identity.email }}"},
    },
    "google.add_group_member": {
        "id": "add_to_list",
        "type": "google.add_group_member",
        "config": {
            "connection": "google",
            "group_key": "sales@example.com",
            "email": "{{ identity.email }}",
        },
        "reversible": True,
    },
    "google.insert_user": {
        "id": "create_user",
        "type": "google.insert_user",
        "config": {
            "connection": "google",
            "primary_email": "{{ identity.email }}",
            "given_name": "{{ identity.given_name }}",
            "family_name": "{{ identity.family_name }}",
            "org_unit_path": "/Staff",
        },
    },
    "google.suspend_user": {
        "id": "suspend",
        "type": "google.suspend_user",
        "config": {"connection": "google", "user_key": "{{ identity.email }}"},
    },
    "http": {
        "id": "welcome_email",
        "type": "http",
        "config": {
            "connection": "mailer",
            "method": "POST",
            "path": "/send",
            "body": {"to": "{{ identity.email }}", "template": "welcome"},
            "expect": [200, 202],
        },
        "retry": {"max_attempts": 3},
    },
    "okta.add_to_group": {
        "id": "add_to_group",
        "type": "okta.add_to_group",
        "config": {"connection": "okta", "group_id": "{{ input.group_id }}", "user_id": _ID},
        "reversible": True,
    },
    "okta.create_user": {
        "id": "create_user",
        "type": "okta.create_user",
        "config": {
            "connection": "okta",
            "login": "{{ identity.email }}",
            "email": "{{ identity.email }}",
            "first_name": "{{ identity.given_name }}",
            "last_name": "{{ identity.family_name }}",
        },
    },
    "okta.deactivate_user": {
        "id": "deactivate",
        "type": "okta.deactivate_user",
        "config": {"connection": "okta", "user_id": "{{ identity.email }}"},
    },
    "scim.add_to_group": {
        "id": "add_groups",
        "type": "scim.add_to_group",
        "config": {"connection": "directory", "group": "{{ identity.department }}", "user_id": _ID},
        "reversible": True,
    },
    "scim.create_user": {
        "id": "create_user",
        "type": "scim.create_user",
        "config": {
            "connection": "directory",
            "user_name": "{{ identity.email }}",
            "display_name": "{{ identity.display_name }}",
            "emails": ["{{ identity.email }}"],
            "if_exists": "adopt",
        },
        "reversible": True,
    },
    "scim.deactivate_user": {
        "id": "deactivate",
        "type": "scim.deactivate_user",
        "config": {"connection": "directory", "user_name": "{{ identity.email }}"},
    },
    "scim.delete_user": {
        "id": "delete",
        "type": "scim.delete_user",
        "config": {
            "connection": "directory",
            "user_name": "{{ identity.email }}",
            "if_missing": "succeed",
        },
    },
    "scim.find_user": {
        "id": "find",
        "type": "scim.find_user",
        "config": {"connection": "directory", "email": "{{ identity.email }}"},
    },
    "scim.remove_from_group": {
        "id": "remove_from_group",
        "type": "scim.remove_from_group",
        "config": {
            "connection": "directory",
            "user_name": "{{ identity.email }}",
            "group": "{{ input.changes.department.old }}",
        },
    },
    "scim.update_user": {
        "id": "update",
        "type": "scim.update_user",
        "config": {
            "connection": "directory",
            "user_name": "{{ identity.email }}",
            "display_name": "{{ identity.display_name }}",
        },
    },
    "set": {
        "id": "names",
        "type": "set",
        "config": {"values": {"login": "{{ identity.email.split('@')[0] | lower }}"}},
    },
    "task": {
        "id": "ship_laptop",
        "type": "task",
        "config": {
            "title": "Ship a laptop to {{ identity.display_name }}",
            "assignees": {"roles": ["operator"]},
            "form": {
                "type": "object",
                "required": ["serial"],
                "properties": {"serial": {"type": "string", "minLength": 5}},
            },
            "timeout": "3d",
            "on_timeout": "fail",
        },
    },
}

"""The command tree: every command that prints data takes --json, and each is exercised with it
somewhere; the lazy table's one-line helps match the commands; the id prefix rules agree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from grantflow.cli import client
from grantflow.cli.lazy import load
from grantflow.cli.main import COMMANDS
from grantflow.store import ids
from tests.acceptance.test_remote_cli import READS

# commands that print no data: long-running processes, and one that prints JSON only
# (the schema commands always print JSON)
NO_JSON = {
    "serve", "worker", "scheduler", "schema workflow", "schema step", "users set-password"
}  # fmt: skip

# commands whose --json output a test parses, other than the READS of test_remote_cli
PARSED_ELSEWHERE = {
    "runs start": "test_remote_cli::test_an_operator_retries_a_failed_run",
    "schema steps": "test_apply_cli::test_the_workflow_schema_checks_each_step_types_config",
    "users invite": "test_signin_cli::test_invite_then_set_password_then_sign_in",
    "users sign-in-link": "test_signin_cli::test_sign_in_link_works_once",
    "backup": "test_backup_restore (SQLite and PostgreSQL)",
    "restore": "test_backup_restore (SQLite and PostgreSQL)",
    "runs retry": "test_remote_cli::test_an_operator_retries_a_failed_run",
    "runs steps": "test_remote_cli::test_a_long_run_shows_its_last_steps_and_lists_the_rest",
    "apply": "test_apply_cli, test_remote_cli",
    "inbox approve": "test_remote_cli, test_inbox_cli",
    "inbox submit": "test_inbox_cli",
    "inbox show": "test_remote_cli::test_the_approver_approves_the_waiting_run_with_their_token",
    "users create": "test_remote_cli::test_a_scoped_token_is_refused_what_its_role_lacks",
    "tokens create": "test_remote_cli, test_cli",
    "tokens revoke": "test_cli::test_tokens_create_list_and_revoke",
    "logout": "test_remote_cli::test_login_saves_a_private_profile_that_later_commands_use",
    "login": "test_remote_cli::test_login_saves_a_private_profile_that_later_commands_use",
    "identities create": "test_identities_cli",
    "identities update": "test_identities_cli",
    "identities leave": "test_identities_cli",
    "identities import": "test_identities_cli, test_cli_start, test_remote_cli",
    "identities cancel-import": "test_remote_cli::test_a_csv_import_is_handed_to_the_workers_and"
    "_followed_to_its_end (its refusal)",
    "grants grant": "test_grants_cli",
    "grants extend": "test_grants_cli",
    "grants revoke": "test_grants_cli",
    "runs note": "test_grants_cli",
    "runs evidence add": "test_grants_cli",
    "runs evidence download": "test_grants_cli",
    "incidents resolve": "test_grants_cli",
    "incidents show": "test_grants_cli",
    "connections test": "test_keys_cli",
    "reconcile": "test_reconciliation",
    "reviews start": "test_access_reviews",
    "reviews items": "test_access_reviews",
    "reviews decide": "test_access_reviews",
    "reviews close": "test_access_reviews",
    "controls evaluate": "test_controls",
    "controls show": "test_controls",
    "reports generate": "test_reports",
    "audit verify": "test_audit_cli",
    "audit checkpoint": "test_audit_cli",
    "migrate": "test_identities_cli, test_cli_start",
    "demo": "test_cli",
    "config show": "test_config",
    "keys rotate": "test_keys_cli",
    "users create-admin": "test_serve",
    "applications create": "test_remote_cli (an application and its connection)",
    "connections create": "test_remote_cli (an application and its connection)",
    "connections replace-credential": "test_remote_cli (an application and its connection)",
}
PARSED_ELSEWHERE.update(
    dict.fromkeys(
        [
            "workflows publish", "workflows disable", "workflows enable", "workflows activate",
            "workflows recompile", "runs pause", "runs resume", "runs cancel", "runs replay",
            "jobs show", "jobs preview", "jobs pause", "jobs resume", "jobs disable",
            "jobs enable", "jobs run-now", "jobs occurrences", "users set",
            "connections set-credential", "applications delete", "reviews show",
            "reviews report", "reports download",
        ],
        "test_remote_cli::test_json_of_commands_that_change_things",
    )
)  # fmt: skip
PARSED_ELSEWHERE.update(
    dict.fromkeys(
        [
            "workflows webhook", "workflows webhook-secret", "workflows resume-safety",
            "workflows deliveries", "usage set-cap", "inbox reject", "inbox skip", "inbox fail",
            "inbox retry", "inbox reassign", "grants dispatch",
        ],
        "test_remote_cli::test_json_of_the_inbox_safety_and_grant_commands",
    )
)  # fmt: skip
# with --json, but no test parses it yet (listed so that a new command is a deliberate choice)
NOT_YET_PARSED: set[str] = set()


def _leaves() -> Iterator[tuple[str, Any]]:
    def walk(path: str, command: Any) -> Iterator[tuple[str, Any]]:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(None):
                yield from walk(f"{path} {name}", command.get_command(None, name))
        else:
            yield path, command

    for name, entry in COMMANDS.items():
        yield from walk(name, load(name, entry))


LEAVES = dict(_leaves())


@pytest.mark.parametrize("path", sorted(LEAVES))
def test_every_command_that_prints_data_takes_json(path: str) -> None:
    """A command without --json must be one that prints no data."""
    options = {opt for param in LEAVES[path].params for opt in getattr(param, "opts", [])}
    assert ("--json" in options) != (path in NO_JSON), path


def test_every_json_command_is_exercised_or_listed() -> None:
    """Each command with --json is run with it by a test (or knowingly listed as not yet)."""
    with_json = set(LEAVES) - NO_JSON
    read = {" ".join(command[:k]) for command in READS for k in range(1, len(command) + 1)} & set(
        LEAVES
    )
    exercised = read | set(PARSED_ELSEWHERE) | NOT_YET_PARSED
    assert with_json - exercised == set()
    assert set(PARSED_ELSEWHERE) | NOT_YET_PARSED <= with_json


def test_the_root_help_lines_are_the_groups_own() -> None:
    """The one line `grantflow --help` shows for a group is the group's own help."""
    for name, entry in COMMANDS.items():
        command = load(name, entry)
        own = (command.help or "").strip().splitlines()[0]
        assert own, name
        if hasattr(command, "list_commands"):  # (a single command's help may say more)
            assert own == entry.help, name


def test_the_cli_and_the_server_agree_on_the_shortest_prefix() -> None:
    """The client's idea of a whole id and of the shortest prefix is the server's."""
    assert client.MIN_PREFIX == ids.MIN_PREFIX
    assert client.FULL_ID == ids.FULL_ID_LENGTH

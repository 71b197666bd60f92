"""Definitions as code from the command line: `grantflow apply -f`, `grantflow workflows ...`
and `grantflow schema workflow`, run as a user runs them (a subprocess on a SQLite file)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from sqlalchemy.engine import make_url

from grantflow.config import load_settings, master_keys
from grantflow.connections.crypto import keyring_for
from grantflow.store.database import open_database
from tests.support.processes import grantflow_env, json_output, run_grantflow
from tests.support.provisioning import prepare_examples

pytestmark = pytest.mark.acceptance

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ONBOARDING = "Onboard new hire"


@dataclass
class Workspace:
    """A migrated SQLite database of its own and a directory for documents."""

    workdir: Path
    db_file: Path

    def grantflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = grantflow_env(
            database_url=f"sqlite:///{self.db_file}", secret_key_file=self.workdir / "secret.key"
        )
        return run_grantflow(*args, env=env, cwd=self.workdir)

    def json(self, *args: str) -> Any:
        return json_output(self.grantflow(*args))

    def document(self, name: str, change: dict[str, Any] | None = None) -> Path:
        """A copy of an example in the workspace, with top-level fields changed."""
        data = yaml.safe_load((EXAMPLES / name).read_text())
        data.update(change or {})
        path = self.workdir / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


@pytest.fixture(scope="module")
def _migrated(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A migrated database holding the application and connections the examples name."""
    workdir = tmp_path_factory.mktemp("apply-template")
    template = Workspace(workdir, workdir / "template.db")
    migrated = template.grantflow("migrate")
    assert migrated.returncode == 0, migrated.stderr
    url = f"sqlite:///{template.db_file}"
    db = open_database(make_url(url))
    settings = load_settings(database_url=url, secret_key_file=workdir / "secret.key")
    db.use_master_keys(lambda: master_keys(settings))
    prepare_examples(db, keyring_for(settings))
    db.dispose()
    return template


@pytest.fixture
def workspace(_migrated: Workspace, tmp_path: Path) -> Workspace:
    shutil.copyfile(_migrated.db_file, tmp_path / "grantflow.db")
    shutil.copyfile(_migrated.workdir / "secret.key", tmp_path / "secret.key")
    return Workspace(tmp_path, tmp_path / "grantflow.db")


def test_apply_creates_and_publishes_then_is_idempotent(workspace: Workspace) -> None:
    """The first apply creates and publishes v1; the same file again changes nothing."""
    path = str(EXAMPLES / "onboarding.yaml")
    first = workspace.json("apply", "-f", path, "--publish", "--json")
    assert first["name"] == ONBOARDING
    assert (first["action"], first["published"], first["version"]) == ("created", True, 1)
    assert first["active_version"] == 1

    again = workspace.json("apply", "-f", path, "--publish", "--json")
    assert (again["action"], again["published"], again["version"]) == ("unchanged", False, 1)
    assert again["workflow_id"] == first["workflow_id"]
    assert [v["number"] for v in workspace.json("workflows", "versions", ONBOARDING, "--json")] == [
        1
    ]


def test_apply_without_publish_leaves_a_draft(workspace: Workspace) -> None:
    """Without --publish the workflow is a draft, and `show` says to publish it."""
    result = workspace.grantflow("apply", "-f", str(EXAMPLES / "offboarding.yaml"))
    assert result.returncode == 0, result.stderr
    assert "Offboard leaver: created (version 1)" in result.stdout
    shown = workspace.json("workflows", "show", "Offboard leaver", "--json")
    assert shown["status"] == "draft"
    assert shown["dispatching"] is False
    assert shown["not_dispatching_because"] == [
        "no published version is active; version 1 is a draft: publish it"
    ]


def test_an_edited_file_becomes_a_draft_then_version_2(workspace: Workspace) -> None:
    """A changed file makes a new draft (v1 stays active); --publish then publishes v2."""
    workspace.json("apply", "-f", str(EXAMPLES / "onboarding.yaml"), "--publish", "--json")
    edited = workspace.document("onboarding.yaml", {"description": "Onboarding, second edition"})

    drafted = workspace.json("apply", "-f", str(edited), "--json")
    assert (drafted["action"], drafted["version"], drafted["published"]) == (
        "draft_created",
        2,
        False,
    )
    assert drafted["active_version"] == 1

    published = workspace.json("apply", "-f", str(edited), "--publish", "--json")
    assert (published["version"], published["published"], published["active_version"]) == (
        2,
        True,
        2,
    )
    assert workspace.json("apply", "-f", str(edited), "--publish", "--json")["action"] == (
        "unchanged"
    )


def test_versions_diff_activate_disable_enable_and_show(workspace: Workspace) -> None:
    """The workflows commands list versions, diff them, roll back, and switch dispatching."""
    workspace.json("apply", "-f", str(EXAMPLES / "onboarding.yaml"), "--publish", "--json")
    edited = workspace.document("onboarding.yaml", {"description": "Second edition"})
    workspace.json("apply", "-f", str(edited), "--publish", "--json")

    listed = workspace.json("workflows", "versions", ONBOARDING, "--json")
    assert [(v["number"], v["state"], v["active"]) for v in listed] == [
        (1, "published", False),
        (2, "published", True),
    ]
    assert {v["created_by"] for v in listed} == {"system:cli"}

    diff = workspace.grantflow("workflows", "diff", ONBOARDING, "1", "2")
    assert diff.returncode == 0, diff.stderr
    lines = diff.stdout.splitlines()
    assert lines[:2] == [f"--- {ONBOARDING} v1", f"+++ {ONBOARDING} v2"]
    assert "+description: Second edition" in lines
    assert any(
        line.startswith("-description: Manager approval, then the directory and Entra ID")
        for line in lines
    )

    activated = workspace.grantflow("workflows", "activate", ONBOARDING, "1")
    assert activated.returncode == 0, activated.stderr
    assert "version 1 is now active" in activated.stdout
    shown = workspace.json("workflows", "show", ONBOARDING, "--json")
    assert (shown["active_version"], shown["dispatching"]) == (1, True)

    assert workspace.grantflow("workflows", "disable", ONBOARDING).returncode == 0
    shown = workspace.json("workflows", "show", ONBOARDING, "--json")
    assert (shown["status"], shown["dispatching"]) == ("disabled", False)
    assert "disabled by system:cli" in shown["not_dispatching_because"][0]
    table = workspace.grantflow("workflows", "show", ONBOARDING)
    assert "not dispatching: the workflow is disabled by system:cli" in table.stdout

    assert workspace.grantflow("workflows", "enable", ONBOARDING).returncode == 0
    shown = workspace.json("workflows", "show", ONBOARDING, "--json")
    assert (shown["status"], shown["dispatching"], shown["not_dispatching_because"]) == (
        "published",
        True,
        [],
    )
    assert [w["name"] for w in workspace.json("workflows", "list", "--json")] == [ONBOARDING]


def test_an_invalid_file_prints_every_problem_and_exits_1(workspace: Workspace) -> None:
    """A document the gate refuses prints one line per problem and an error line; nothing
    is saved."""
    document = yaml.safe_load((EXAMPLES / "onboarding.yaml").read_text())
    document["steps"][3]["next"] = "make_coffee"
    document["steps"][8]["config"]["path"] = "{{ mailer.url }}/send"
    document["trigger"] = {"type": "schedule", "cron": "at dawn"}
    path = workspace.workdir / "broken.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))

    result = workspace.grantflow("apply", "-f", str(path), "--publish")
    assert result.returncode == 1
    assert "  [missing_step] step create_user steps[3].next: leads to step 'make_coffee'" in (
        result.stdout
    )
    assert "  [template_unknown_variable] step welcome_email steps[8].config.path:" in (
        result.stdout
    )
    assert "  [cron_invalid] trigger.cron: 'at dawn' is not a 5-field cron expression" in (
        result.stdout
    )
    assert "  [unreachable_step] step add_groups steps[4]:" in result.stdout
    assert "error: version 1 of 'Onboard new hire' cannot be published" in result.stderr
    assert "next: fix each problem listed in details" in result.stderr
    assert "Traceback" not in result.stderr
    assert workspace.json("workflows", "list", "--json") == []


def test_a_malformed_document_prints_each_field(workspace: Workspace) -> None:
    """A document with the wrong shape lists each bad field, even without --publish."""
    path = workspace.workdir / "shape.yaml"
    path.write_text(
        "name: Shape\ntrigger: {type: manual}\nsteps:\n"
        "  - {id: Bad-Id, type: http}\n  - {id: ok, type: set, colour: red}\n"
    )
    result = workspace.grantflow("apply", "-f", str(path))
    assert result.returncode == 1
    assert "  [document_invalid] step Bad-Id document.steps[0].id: step id 'Bad-Id' must be" in (
        result.stdout
    )
    assert "  [document_invalid] step ok document.steps[1].colour: unknown field" in result.stdout
    assert result.stderr.startswith("error: the workflow document is not valid")


def test_broken_yaml_names_the_line(workspace: Workspace) -> None:
    """A YAML syntax error ends with one error line giving the file and line."""
    path = workspace.workdir / "syntax.yaml"
    path.write_text("name: Broken\nsteps: [\n  - id: a\n")
    result = workspace.grantflow("apply", "-f", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}: not valid YAML or JSON at line")


def test_schema_workflow_prints_a_valid_json_schema(workspace: Workspace) -> None:
    """`grantflow schema workflow` prints a JSON Schema that accepts the examples."""
    schema = workspace.json("schema", "workflow")
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"name", "trigger", "steps", "settings"} <= set(schema["properties"])
    for name in ("onboarding.yaml", "offboarding.yaml"):
        jsonschema.validate(yaml.safe_load((EXAMPLES / name).read_text()), schema)


def test_the_workflow_schema_checks_each_step_types_config(workspace: Workspace) -> None:
    """The workflow schema carries each step type's config schema, so an editor flags an
    unknown setting or a missing required one; `schema step` prints one type's schema."""
    schema = workspace.json("schema", "workflow")
    validator = jsonschema.Draft202012Validator(schema)
    document = yaml.safe_load((EXAMPLES / "onboarding.yaml").read_text())
    first = document["steps"][0]
    first.setdefault("config", {})["no_such_setting"] = 1
    errors = [e.message for e in validator.iter_errors(document)]
    assert any("'no_such_setting' was unexpected" in m for m in errors), errors

    set_step = {"id": "x", "type": "set", "config": {}}
    document = {"name": "w", "trigger": {"type": "manual"}, "steps": [set_step]}
    errors = [e.message for e in validator.iter_errors(document)]
    assert any("'values' is a required property" in m for m in errors), errors

    http = workspace.json("schema", "step", "http")
    jsonschema.Draft202012Validator.check_schema(http)
    assert "url" in http["properties"]
    listed = {row["type"] for row in workspace.json("schema", "steps", "--json")}
    assert {"http", "set", "approval", "scim.create_user"} <= listed

    unknown = workspace.grantflow("schema", "step", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines()[0] == "error: no step type 'nope'"


def test_dry_run_command_renders_requests(workspace: Workspace) -> None:
    """`grantflow workflows dry-run` renders the exact requests for a sample, sending nothing."""
    workspace.json("apply", "-f", str(EXAMPLES / "onboarding.yaml"), "--json")
    sample = workspace.workdir / "sample.yaml"
    sample.write_text(
        yaml.safe_dump(
            {
                "identity": {
                    "id": "emp-7",
                    "email": "lin@example.com",
                    "display_name": "Lin Chen",
                    "department": "Sales",
                    "attributes": {"employment_type": "contractor"},
                    "manager": {"email": "grace@example.com", "display_name": "Grace"},
                },
            }
        )
    )
    result = workspace.grantflow("workflows", "dry-run", ONBOARDING, "--sample", str(sample))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["sent"] is False
    assert output["state"] == "draft"
    steps = {s["id"]: s for s in output["steps"]}
    create = steps["create_user"]["preview"]["request"]
    assert (create["method"], create["endpoint"]) == ("POST", "/Users")
    assert create["payload"]["userName"] == "lin@example.com"
    assert steps["add_groups"]["preview"]["lookups"] == [
        {"method": "GET", "endpoint": "/Groups", "filter": 'displayName eq "Sales"'}
    ]
    assert steps["add_groups"]["unresolved"] == ["steps.create_user.output.user_id"]
    assert output["path"] == [
        "has_manager",
        "manager_approval",
        "create_user",
        "add_groups",
        "create_mailbox",
        "needs_licence",
        "welcome_email",
    ]


def test_dry_run_of_an_unknown_workflow_is_one_error_line(workspace: Workspace) -> None:
    """Naming a workflow that does not exist ends with an error line, exit 1."""
    result = workspace.grantflow("workflows", "dry-run", "Nope")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no workflow with id or name 'Nope'")


def test_publish_and_validate_commands_report_the_gate(workspace: Workspace) -> None:
    """`workflows validate` exits 1 listing errors; `workflows publish` prints each problem."""
    document = yaml.safe_load((EXAMPLES / "offboarding.yaml").read_text())
    document["steps"][1]["next"] = "gone"
    path = workspace.workdir / "offboarding.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    workspace.json("apply", "-f", str(path), "--json")

    validated = workspace.grantflow("workflows", "validate", "Offboard leaver", "1", "--json")
    assert validated.returncode == 1
    errors = json.loads(validated.stdout)["errors"]
    assert {(e["code"], e["step"]) for e in errors} == {
        ("missing_step", "disable_account"),
        ("unreachable_step", "disable_entra"),
        ("unreachable_step", "revoke_sessions"),
        ("unreachable_step", "suspend_google"),
        ("unreachable_step", "deactivate_okta"),
        ("unreachable_step", "remove_from_wiki"),
        ("unreachable_step", "remove_badge"),
    }

    published = workspace.grantflow("workflows", "publish", "Offboard leaver", "1")
    assert published.returncode == 1
    assert "  [missing_step] step disable_account steps[1].next:" in published.stdout
    assert "error: version 1 of 'Offboard leaver' cannot be published" in published.stderr
    shown = workspace.json("workflows", "show", "Offboard leaver", "--json")
    assert (shown["status"], shown["active_version"]) == ("draft", None)

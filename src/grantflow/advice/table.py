"""THE table of advice: for every failure code and waiting reason, its failure class, the words
of the next action and the one operation that performs it (None when no single action can
work: then words only, and no button).

Keys are failure codes ("execution_timeout"), HTTP refusals by status ("http_404"), waiting
reasons ("waiting.approval"), stuck causes ("stuck.no_worker") and a grant's no-run reasons
("no_run.workflow_disabled"). A key with a "/situation" suffix is the advice for that code in a
situation decided by `grantflow.advice.decide` (e.g. "http_404/after_irreversible": a
non-reversible step already acted, so Replay with latest would be refused).

Words may contain "{hint}": the specific words the raise site gave (a host, a step, a field),
or the entry's `hint` when it gave none. Every entry with an operation has a scenario in
tests/integration/test_advice.py that takes the action and sees the promised outcome."""

from __future__ import annotations

from dataclasses import dataclass

from grantflow.advice.operations import OPERATIONS


@dataclass(frozen=True)
class Advice:
    key: str  # a failure code, "http_<status>", "waiting.<reason>", ... (see the module doc)
    failure_class: str | None  # the failure class it carries (None for waits and stuck causes)
    next_action: str  # the words; "{hint}" is the raise site's specifics
    operation: str | None = None  # the name of the Operation that performs it, or None
    hint: str = "see the step's attempts for details"  # when the raise site gave no words

    def words(self, hint: str | None = None) -> str:
        return self.next_action.replace("{hint}", hint or self.hint)


_CREDENTIAL = "replace the connection's credential, test the connection, then Retry"
_EXHAUSTED = (
    "{hint}; the step used all its attempts: once the target is healthy, Retry the run "
    "(it resumes from this step)"
)

_ENTRIES: tuple[Advice, ...] = (
    # --- the engine ---------------------------------------------------------------------------
    Advice(
        "internal_error",
        "internal",
        "{hint}",
        hint="a fault in Grantflow: report it with the run id (the timeline shows where)",
    ),
    Advice(
        "plan_integrity_failed",
        "internal",
        "the version's stored plan is damaged: Recompile the version's plan from its document, "
        "then Retry the run",
        "version.recompile",
    ),
    Advice(
        "execution_timeout",
        "timeout",
        "find why it was slow (the timeline shows where time went), then Retry the run "
        "or raise settings.execution_timeout",
        "run.retry",
    ),
    Advice(
        "loop_bound_exceeded",
        "permanent",
        "check the loop's exit condition, fix the workflow, then Replay with latest",
        "run.replay_latest",
    ),
    Advice(
        "expression_error",
        "validation",
        "{hint}; fix the workflow and publish it, then Replay with latest",
        "run.replay_latest",
        hint="check the mapping against the run context (a dry-run shows it)",
    ),
    Advice(
        "cancelled",
        "cancelled",
        "{hint}",
        "run.replay",
        hint="Replay the run if it should still happen",
    ),
    # --- calls to external systems ------------------------------------------------------------
    Advice("transient_error", "transient", _EXHAUSTED, "run.retry"),
    Advice("step_timeout", "timeout", _EXHAUSTED, "run.retry"),
    Advice("throttled", "transient", _EXHAUSTED, "run.retry"),
    Advice("connector_error", "connector", "{hint}"),
    Advice("permanent_error", "permanent", "{hint}"),
    Advice(
        "http_401",
        "permanent",
        "{hint}",
        "run.retry",
        hint=(
            "the credential is missing, wrong or lacks permission in the target system: "
            "replace it, test the connection, then Retry"
        ),
    ),
    Advice(
        "http_403",
        "permanent",
        "{hint}",
        "run.retry",
        hint=(
            "the credential is missing, wrong or lacks permission in the target system: "
            "replace it, test the connection, then Retry"
        ),
    ),
    Advice(
        "http_404",
        "permanent",
        "{hint}",
        "run.replay_latest",
        hint=(
            "the path or an id in it does not exist in the target: check the step's URL "
            "(a dry-run shows it), fix the workflow, then Replay with latest"
        ),
    ),
    Advice(
        "http_404/after_irreversible",
        "permanent",
        "the path or an id in it does not exist in the target; this run already completed a "
        "non-reversible step, so Replay with latest is refused: create the missing object in "
        "the target, then Retry (it resumes from this step)",
        "run.retry",
    ),
    Advice(
        "http_409",
        "permanent",
        "{hint}",
        "run.retry",
        hint=(
            "the target reports a conflict (often: it already exists): resolve it in the target, "
            "then Retry"
        ),
    ),
    Advice(
        "http_4xx",
        "permanent",
        "{hint}",
        "run.replay_latest",
        hint=(
            "the request was refused as invalid: check the step's mapping with a dry-run, "
            "fix the workflow, then Replay with latest"
        ),
    ),
    Advice("unauthorized", "permanent", "{hint}", "run.retry", hint=_CREDENTIAL),
    Advice("forbidden", "permanent", "{hint}", "run.retry", hint=_CREDENTIAL),
    Advice("permission_denied", "permanent", "{hint}", "run.retry", hint=_CREDENTIAL),
    Advice("refused", "permanent", "{hint}"),
    Advice("scim_refused", "permanent", "{hint}"),
    Advice(
        "not_found",
        "permanent",
        "{hint}",
        "run.retry",
        hint="create the missing object in the target (or fix the step's mapping), then Retry",
    ),
    Advice(
        "group_missing",
        "permanent",
        "{hint}",
        "run.retry",
        hint="create the group in the target (or fix its name in the step), then Retry",
    ),
    Advice(
        "already_exists",
        "permanent",
        "the account already exists in the target: set `if_exists: adopt` on the step to use "
        "it (publish the workflow), then Replay with latest; or remove the existing account in "
        "the target, then Retry",
        "run.replay_latest",
    ),
    Advice(
        "already_exists/after_irreversible",
        "permanent",
        "the account already exists in the target; this run already completed a "
        "non-reversible step, so Replay with latest is refused: remove or rename the existing "
        "account in the target, then Retry (it resumes from this step)",
        "run.retry",
    ),
    Advice(
        "step_config_invalid",
        "permanent",
        "{hint}",
        "run.replay_latest",
        hint="fix the step's mapping (a dry-run shows it), publish, then Replay with latest",
    ),
    Advice(
        "scim_invalid_request",
        "permanent",
        "{hint}",
        "run.replay_latest",
        hint="check the step's mapping with a dry-run, fix the workflow, then Replay with latest",
    ),
    Advice(
        "url_invalid",
        "permanent",
        "{hint}",
        "run.replay_latest",
        hint="fix the step's URL (a dry-run shows it), publish, then Replay with latest",
    ),
    Advice("scim_unsupported", "permanent", "{hint}"),
    Advice("scim_invalid_response", "permanent", "{hint}"),
    Advice(
        "wrong_connection_kind",
        "permanent",
        "point the step at a scim connection (create one if needed), publish the workflow, "
        "then Replay with latest",
        "run.replay_latest",
    ),
    Advice(
        "redirect_refused",
        "safety",
        "{hint}; then Retry (it resumes from this step)",
        "run.retry",
        hint="if the redirect's host is expected, add it to the connection's allowed_hosts",
    ),
    Advice(
        "no_licenses",
        "permanent",
        "{hint}",
        "run.retry",
        hint="free or buy seats of the SKU, then Retry",
    ),
    Advice(
        "usage_location_missing",
        "permanent",
        "{hint}",
        "run.retry",
        hint="set the user's usageLocation, then Retry",
    ),
    Advice(
        "license_conflict",
        "permanent",
        "{hint}",
        "run.retry",
        hint="disable the conflicting service plans or remove the conflicting licence, then Retry",
    ),
    # --- connections and configuration --------------------------------------------------------
    Advice(
        "connection_missing",
        "permanent",
        "{hint}",
        "run.retry",
        hint="create the connection (or fix its name in the step), then Retry",
    ),
    Advice(
        "connection_disconnected",
        "permanent",
        "{hint}",
        "run.retry",
        hint="set its credential or enable it, test it, then Retry the run",
    ),
    Advice(
        "reauth_required",
        "connector",
        "Replace credential: the connection's credential can no longer be refreshed; replace it "
        "(reauthorise), and the run resumes by itself",
        "connection.set_credential",
    ),
    Advice("credential_missing", "configuration", "{hint}"),
    Advice("token_response_invalid", "connector", "{hint}"),
    Advice("too_many_redirects", "connector", "{hint}"),
    # a worker restart with its configuration is the fix: no action a button can take
    Advice("worker_not_configured", "configuration", "{hint}"),
    Advice("outbound_refused", "safety", "{hint}"),
    Advice("safety_stop", "safety", "{hint}"),
    Advice("configuration_error", "configuration", "{hint}"),
    # --- run operations refused ----------------------------------------------------------------
    Advice(
        "replay_refused",
        "validation",
        "this run already completed a non-reversible step, so Replay with latest is refused: "
        "fix the workflow, then Dispatch the grant (its workflow starts again from the "
        "beginning as a new run)",
        "grant.dispatch",
    ),
    Advice(
        "replay_refused/no_grant",
        "validation",
        "this run already completed a non-reversible step, so Replay with latest is refused, "
        "and it belongs to no grant: fix the workflow, check what the acted steps did in their "
        "systems, and start a new run of the workflow by hand if it is still needed",
    ),
    # --- grants: why no run started, and dispatching a grant again ---------------------------
    # (no_run.* words end with _THEN_DISPATCH: a grant combining two problems joins their fixes)
    Advice(
        "no_run.workflow_disabled",
        None,
        "enable it, then dispatch the grant",
        "workflow.enable",
    ),
    Advice(
        "no_run.unpublished",
        None,
        "publish its draft, then dispatch the grant",
        "version.publish",
    ),
    Advice(
        "no_run.no_steps",  # publishing an empty workflow is refused: a step first
        None,
        "add a step to its draft and publish it, then dispatch the grant",
    ),
    Advice(
        "dispatch.grant_revoked",
        "validation",
        "grant the access again ({hint}): the new grant starts its workflows",
        "grant.create",
    ),
    Advice(
        "dispatch.no_workflow",
        "validation",
        "create and publish an access_granted workflow for {hint}, then dispatch the grant",
    ),
    Advice(
        "dispatch.workflow_disabled",
        "validation",
        "{hint}",
        "workflow.enable",
        hint="enable the workflow, then dispatch the grant",
    ),
    Advice(
        "dispatch.no_active_version",
        "validation",
        "{hint}",
        hint="publish a version of the workflow, then dispatch the grant",
    ),
    Advice(
        "dispatch.run_in_flight",
        "validation",
        "wait for it to end, or cancel it ({hint}), then dispatch the grant",
        "run.cancel",
    ),
    # --- incidents ----------------------------------------------------------------------------
    Advice(
        "comment_required",
        "validation",
        "resolve it with a comment saying how the access was removed ({hint})",
        "incident.resolve",
    ),
    Advice(
        "limit_exceeded",  # an abuse limit (safety/limits.py): the raise site names it
        "safety",
        "{hint}",
        hint="do less in one run (fix the workflow and Replay with latest), or raise the "
        "setting the message names",
    ),
    # --- people -------------------------------------------------------------------------------
    Advice("rejected", "rejected", "{hint}"),
    Advice(
        "failed_by_person",
        "permanent",
        "{hint}",
        "run.replay",
        hint="fix what the reason names, then Replay the run",
    ),
    Advice(
        "task_timed_out",
        "permanent",
        "no one acted on the task in time: Replay the run (a new task is created), or give "
        "the task a longer timeout",
        "run.replay",
    ),
    # --- waiting reasons (a run that waits) ---------------------------------------------------
    Advice(
        "waiting.approval",
        None,
        "waiting for an approver to Approve or reject in their inbox",
        "task.approve",
    ),
    Advice(
        "waiting.no_one_can_act",  # an approval or task nobody may act on (routing problem)
        None,
        "{hint}",
        "task.reassign",
        hint="no one can act on this task: Reassign it to an active user or role",
    ),
    Advice(
        "role_has_no_members",  # a publish warning: words only (give someone the role)
        None,
        "{hint}",
    ),
    Advice(
        "waiting.task",
        None,
        "waiting for the assignee to do the task and Submit it in their inbox",
        "task.submit",
    ),
    Advice(
        "waiting.escalated",
        None,
        "a step failed and a person must decide: Retry the run once the cause is fixed "
        "(it resumes from this step), skip the step, or fail the run",
        "run.retry",
    ),
    Advice(
        "waiting.reauth",
        None,
        "a connection needs a new credential: Replace credential, and the run resumes by itself",
        "connection.set_credential",
    ),
    Advice(
        "waiting.retry",
        None,
        "a step failed transiently; the run retries it by itself at the time shown",
    ),
    Advice("waiting.delay", None, "a delay step waits until the time shown; nothing to do"),
    Advice(
        "waiting.safety",
        None,
        "the workflow is paused for safety (a breaker tripped: the workflow shows which, with "
        "its figures); find the cause, then Resume workflow on the workflow: every held run "
        "goes on, oldest first",
        "workflow.resume_safety",
    ),
    Advice(
        "waiting.spend_cap",
        None,
        "a spend cap is reached: the run goes on by itself when the period rolls over, or at "
        "once when you Adjust cap (raise it)",
        "spend_cap.set",
    ),
    Advice(
        "paused.operator",
        None,
        "an operator paused the run; Resume continues it from where it stopped",
        "run.resume",
    ),
    # --- stuck causes -------------------------------------------------------------------------
    Advice(
        "stuck.no_worker",
        None,
        "no live worker is taking runs: start `grantflow worker` or `grantflow serve`; queued "
        "runs resume once one runs",
    ),
    Advice("stuck.queue_backlog", None, "{hint}", hint="wait, or start more workers"),
    Advice(
        "stuck.transport_down",
        None,
        "{hint}",
        hint="start Valkey/Redis (GRANTFLOW_QUEUE_URL): queued runs are dispatched within "
        "seconds of it coming back",
    ),
    Advice(
        "stuck.worker_lost",
        None,
        "{hint}",
        hint="another worker resumes the run once the lost worker's lease expires",
    ),
    Advice("stuck.external_call_slow", None, "{hint}", hint="check that system's health"),
)

TABLE: dict[str, Advice] = {entry.key: entry for entry in _ENTRIES}

THEN_DISPATCH = ", then dispatch the grant"


def check_table() -> list[str]:
    """Problems with the table itself: unknown operations, words that do not name their
    operation's label (a button must match the words)."""
    problems = []
    for entry in _ENTRIES:
        if entry.operation is None:
            continue
        op = OPERATIONS.get(entry.operation)
        if op is None:
            problems.append(f"{entry.key}: unknown operation {entry.operation!r}")
        elif op.label.lower() not in entry.words().lower():
            problems.append(f"{entry.key}: the words do not name {op.label!r}")
    return problems

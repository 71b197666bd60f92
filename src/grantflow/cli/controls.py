"""`grantflow controls list | evaluate | evaluations | show`: the built-in controls over
Grantflow's own inventory, their evaluations and findings, through /api/v1/controls."""

from __future__ import annotations

from typing import Any

import typer

from grantflow.cli.client import connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, fail, out
from grantflow.errors import ValidationError

app = typer.Typer(
    help="Evaluate the built-in controls and read their findings.", no_args_is_help=True
)


def _params(values: list[str]) -> dict[str, dict[str, Any]]:
    """CONTROL.PARAM=N options as the params of an evaluation."""
    parsed: dict[str, dict[str, Any]] = {}
    for value in values:
        key, sep, number = value.partition("=")
        control, dot, name = key.partition(".")
        if not sep or not dot or not control or not name:
            fail(
                ValidationError(
                    f"--param: {value!r} is not CONTROL.PARAM=NUMBER",
                    next_action="e.g. --param approvals_pending.days=3",
                )
            )
        try:
            parsed.setdefault(control, {})[name] = int(number)
        except ValueError:
            fail(ValidationError(f"--param {key}: {number!r} is not a whole number"))
    return parsed


def _print(shown: dict[str, Any]) -> None:
    summary = shown["summary"]
    out.print(
        f"evaluation {shown['id']} ({shown['created_at'][:16].replace('T', ' ')}Z): "
        f"{summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed",
        markup=False,
    )
    emit_table(
        [
            {
                "control": r["control"],
                "title": r["title"],
                "result": "pass" if r["passed"] else "FAIL",
                "findings": r["finding_count"],
            }
            for r in shown["results"]
        ],
        ["control", "title", "result", "findings"],
    )
    for result in shown["results"]:
        if not result["findings"]:
            continue
        out.print(
            f"\n{result['control']} — {result['title']}: {result['finding_count']} finding(s)",
            markup=False,
        )
        for finding in result["findings"]:
            out.print(
                f"  {finding['object_type']} {finding['object_id']}  {finding['link']}\n"
                f"    {finding['detail']}",
                markup=False,
            )
        if result.get("truncated"):
            out.print(f"  … only the first {len(result['findings'])} are kept", markup=False)


@app.command("list")
def list_controls(as_json: bool = JSON_OPTION) -> None:
    """The catalogue: every control, its parameters and their defaults."""
    with errors_as_lines(), connect() as api:
        shown = api.get("/controls")
    if as_json:
        emit_json(shown)
        return
    emit_table(
        [
            {
                "id": c["id"],
                "title": c["title"],
                "params": ", ".join(f"{p['name']}={p['default']} {p['unit']}" for p in c["params"]),
            }
            for c in shown
        ],
        ["id", "title", "params"],
    )


@app.command("evaluate")
def evaluate(
    control: list[str] = typer.Option(
        None, "--control", "-c", help="a control id (repeatable); all when omitted"
    ),
    param: list[str] = typer.Option(
        None, "--param", "-p", help="CONTROL.PARAM=NUMBER, e.g. approvals_pending.days=3"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Evaluate the controls and store the evaluation; exits 1 when a control fails."""
    request = {"controls": control or None, "params": _params(param or [])}
    with errors_as_lines(), connect() as api:
        shown = api.post("/controls/evaluate", request)
    if as_json:
        emit_json(shown)
    else:
        _print(shown)
    if not shown["passed"]:
        raise typer.Exit(1)


@app.command("evaluations")
def evaluations(limit: int = typer.Option(20, min=1, max=500), as_json: bool = JSON_OPTION) -> None:
    """Past evaluations, newest first."""
    with errors_as_lines(), connect() as api:
        rows = api.items("/controls/evaluations", limit)
    if as_json:
        emit_json(rows)
        return
    emit_table(
        [
            {
                "id": r["id"],
                "created_at": r["created_at"],
                "created_by": r["created_by"],
                "passed": r["summary"].get("passed"),
                "failed": r["summary"].get("failed"),
                "failed_controls": ", ".join(r["summary"].get("failed_controls", [])),
            }
            for r in rows
        ],
        ["id", "created_at", "created_by", "passed", "failed", "failed_controls"],
    )


@app.command("show")
def show(
    evaluation_id: str = typer.Argument(
        "latest", help="an evaluation id (or a unique prefix), or latest"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """One evaluation with its findings."""
    with errors_as_lines(), connect() as api:
        shown = api.get(f"/controls/evaluations/{segment(evaluation_id)}")
    if as_json:
        emit_json(shown)
    else:
        _print(shown)

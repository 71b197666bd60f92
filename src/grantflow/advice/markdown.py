"""The advice table as Markdown: the operations, then every entry. It is documented in one
place, the generated reference page docs/reference/errors.md (`scripts/docs_reference.py
--write`, or `scripts/advice_table.py --write`, rewrites it; `make test` fails when it differs)."""

from __future__ import annotations

from grantflow.advice.operations import OPERATIONS
from grantflow.advice.table import TABLE


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The operations, then every entry of the table."""
    lines = [
        "| operation | button | API | CLI | permission |",
        "|---|---|---|---|---|",
    ]
    for op in OPERATIONS.values():
        lines.append(
            f"| `{op.name}` | {op.label} | `{op.method} {op.path}` | `{op.cli}` | "
            f"`{op.permission}` |"
        )
    lines += [
        "",
        "| code | class | next action | operation |",
        "|---|---|---|---|",
    ]
    for key in sorted(TABLE):
        entry = TABLE[key]
        words = entry.words()
        if "{hint}" in entry.next_action:  # the raise site's specific words lead, when given
            words = f"*(the raise site's words, else:)* {words}"
        lines.append(
            f"| `{key}` | {entry.failure_class or '—'} | {_cell(words)} | "
            f"{f'`{entry.operation}`' if entry.operation else '— (words only)'} |"
        )
    return "\n".join(lines)

"""Reading checkpoint files: the appended lines, one object, a list; clear errors otherwise."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from grantflow.audit import checkpoints
from grantflow.errors import ValidationError


def _checkpoint(entries: int) -> dict[str, object]:
    return checkpoints.Checkpoint(
        at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        entries=entries,
        head_id=entries or None,
        head=f"{entries:064x}",
        key_id="0123456789abcdef",
        signature="ab" * 32,
    ).to_json()


def test_every_file_form_reads_with_its_place_named(tmp_path: Path) -> None:
    """Appended lines, one (pretty-printed) object and a list all read, each checkpoint knowing
    where it came from."""
    lines = tmp_path / "lines.jsonl"
    lines.write_text("".join(json.dumps(_checkpoint(n)) + "\n" for n in (1, 2)) + "\n")
    one = tmp_path / "one.json"
    one.write_text(json.dumps(_checkpoint(3), indent=2))
    many = tmp_path / "many.json"
    many.write_text(json.dumps([_checkpoint(4), _checkpoint(5)], indent=2))

    assert [(c.entries, c.source) for c in checkpoints.load(lines)] == [
        (1, f"{lines} line 1"),
        (2, f"{lines} line 2"),
    ]
    assert [(c.entries, c.source) for c in checkpoints.load(one)] == [(3, str(one))]
    assert [(c.entries, c.source) for c in checkpoints.load(many)] == [
        (4, f"{many} item 1"),
        (5, f"{many} item 2"),
    ]
    assert checkpoints.load(one)[0].to_json() == _checkpoint(3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no checkpoint"),
        ('{"kind": "grantflow.audit.checkpoint"}\nnot json\n', "line 2: not JSON"),
        (json.dumps({**_checkpoint(1), "at": "yesterday"}), "at: not an RFC 3339 time"),
        (json.dumps({**_checkpoint(1), "at": "2026-01-02T03:04:05"}), "at: needs a time zone"),
        (json.dumps({**_checkpoint(1), "entries": -1}), "entries: must not be negative"),
        (json.dumps({**_checkpoint(1), "entries": True}), "entries: missing or of the wrong"),
        (json.dumps({**_checkpoint(1), "signature": None}), "signature: missing or of the wrong"),
    ],
)
def test_a_file_that_is_not_checkpoints_is_a_clear_error(
    tmp_path: Path, content: str, message: str
) -> None:
    """An empty file, a line that is not JSON, or a field of the wrong shape is refused with the
    file (and line) and the field named."""
    path = tmp_path / "checkpoints.jsonl"
    path.write_text(content)
    with pytest.raises(ValidationError) as refused:
        checkpoints.load(path)
    assert refused.value.message.startswith(str(path))
    assert message in refused.value.message

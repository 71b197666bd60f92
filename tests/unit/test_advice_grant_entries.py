"""The advice table's entries for grants, incidents and routing are well formed."""

from __future__ import annotations

from grantflow import advice
from grantflow.advice.table import THEN_DISPATCH


def test_the_table_names_each_operation_in_its_words() -> None:
    """check_table finds no unknown operation and no words that miss their button's label."""
    assert advice.check_table() == []


def test_no_run_advice_ends_with_dispatching_the_grant() -> None:
    """Each no-run fix ends with the dispatch, so two fixes join into one sentence."""
    no_run = [e for key, e in advice.TABLE.items() if key.startswith("no_run.")]
    assert len(no_run) == 3
    assert all(e.next_action.endswith(THEN_DISPATCH) for e in no_run)

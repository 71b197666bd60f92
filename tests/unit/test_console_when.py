"""The console's `when` filter writes every time one way, RFC 3339 UTC to the second, whether
the page got a datetime or a time already written as text (a breaker's `tripped_at` read from
JSON came through with its microseconds)."""

from __future__ import annotations

import datetime as dt

import pytest

from grantflow.console.templating import _when


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 12, 6, 5, 4, 3, 987654, tzinfo=dt.UTC),
        "2026-12-06T05:04:03.987654+00:00",
        "2026-12-06T05:04:03.987654Z",
        "2026-12-06T06:04:03.987654+01:00",
        dt.datetime(2026, 12, 6, 5, 4, 3, 987654),  # naive: UTC
    ],
)
def test_every_form_of_a_time_reads_the_same(value: object) -> None:
    assert _when(value) == "2026-12-06T05:04:03Z"


def test_none_and_text_that_is_not_a_time() -> None:
    assert _when(None) == "—"
    assert _when("never") == "never"
    assert _when("2026-12-06") == "2026-12-06"  # a date stays a date

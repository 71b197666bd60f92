"""A missing PostgreSQL or Redis skips the tests on a laptop and fails the run in CI."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.support.services import service_missing


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """With CI set to a true value, a missing service fails the test and says CI requires it."""
    monkeypatch.setenv("CI", value)
    with pytest.raises(Failed) as failed:
        service_missing("Redis", "connection refused")
    assert failed.value.msg == "Redis is not reachable (connection refused); CI=true requires it"
    assert failed.value.pytrace is False


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    """Without CI (or with CI false), a missing service skips the test with the reason."""
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(Skipped) as skipped:
        service_missing("PostgreSQL", "connection refused")
    assert skipped.value.msg == "PostgreSQL is not reachable (connection refused)"

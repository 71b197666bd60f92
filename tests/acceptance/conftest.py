"""Acceptance tests run the real `grantflow` command; without a server a data command builds the
API app in its own process (seconds of CPU each, more on a loaded machine), so a test that runs
a dozen of them gets a longer safety net than the suite's 300 s."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(900))

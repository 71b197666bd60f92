"""The test harness's own promises about the shared local services."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.redis
def test_redis_fixture_isolates_and_cleans_keys(redis_keys: tuple[Any, str]) -> None:
    """Keys written under the test's prefix are visible to it and to nobody else's prefix."""
    client, prefix = redis_keys
    client.set(prefix + "probe", "1")
    assert client.get(prefix + "probe") == b"1"
    assert list(client.scan_iter(match=prefix + "*")) == [(prefix + "probe").encode()]
    assert prefix.startswith("grantflow-test:")

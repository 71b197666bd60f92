"""The garbage collector is off only while a command loads: on again once the command has
opened its database, and whenever `main` returns, also in a process that called it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from grantflow.cli import collector, direct
from grantflow.cli.main import main
from grantflow.config import load_settings


@pytest.fixture
def collecting() -> Iterator[None]:
    yield
    collector.resume()  # (whatever a test left, the suite's process collects again)
    assert gc.isenabled()


def test_main_leaves_the_collector_on(
    collecting: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["grantflow", "--help"])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 0
    assert "Usage" in capsys.readouterr().out
    assert gc.isenabled()


def test_opening_the_database_turns_the_collector_on_again(
    collecting: None, tmp_path: Path
) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'grantflow.db'}",
        secret_key_file=str(tmp_path / "secret.key"),
    )
    collector.pause()
    assert not gc.isenabled()
    with direct.database(settings, migrated=False):
        assert gc.isenabled()

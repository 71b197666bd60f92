"""An exception logged in either format comes out as a plain traceback, without the frames'
local variables: a secret a frame held is never printed (a rich traceback would show it,
past the redaction of events), and the traceback is not lost either."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from grantflow.logging import configure_logging
from tests.support.logs import logging_restored

SECRET = "canary-d41f0c-local-secret"


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    with logging_restored():
        yield


def _fail() -> None:
    api_token = SECRET  # a local variable of the failing frame
    raise ValueError(f"boom after {len(api_token)} characters")


def _logged(fmt: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    configure_logging("info", fmt)  # (after capsys replaced stderr: it writes there)
    try:
        _fail()
    except ValueError:
        logging.getLogger("grantflow.test").exception("stdlib.failed")
    try:
        _fail()
    except ValueError:
        structlog.get_logger("grantflow.test").exception("structlog.failed")
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_exception_is_a_plain_traceback_without_locals(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _logged(fmt, capsys)
    text = "\n".join(lines)
    assert SECRET not in text
    if fmt == "json":
        events = {e["event"]: e for e in map(json.loads, lines)}
        for name in ("stdlib.failed", "structlog.failed"):
            exception = events[name]["exception"]
            assert exception.startswith("Traceback (most recent call last):")
            assert "in _fail" in exception
            assert exception.endswith("ValueError: boom after 26 characters")
    else:
        assert text.count("Traceback (most recent call last):") == 2
        assert text.count("ValueError: boom after 26 characters") == 2
        assert "locals" not in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_an_exception_logged_after_its_except_block_keeps_its_own_traceback(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Handed over as `exc_info` (as asyncio and uvicorn do), not the one being handled."""
    configure_logging("info", fmt)
    try:
        _fail()
    except ValueError as exc:
        kept = exc
    try:
        raise KeyError("another, being handled")
    except KeyError:
        logging.getLogger("grantflow.test").error("stdlib.failed", exc_info=kept)
    text = capsys.readouterr().err
    assert "ValueError: boom after 26 characters" in text
    assert "in _fail" in text
    assert "KeyError" not in text
    assert SECRET not in text

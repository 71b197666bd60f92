"""Where the console goes after signing in: a path on this site only, never another site."""

from __future__ import annotations

import pytest

from grantflow.console.templating import safe_next


@pytest.mark.parametrize(
    "target", ["/runs/123", "/inbox?kind=approval", "/account/sessions#x", "/"]
)
def test_paths_on_this_site_are_kept(target: str) -> None:
    """A path starting with one slash is followed as is."""
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "javascript:alert(1)",
        "runs",
        "/runs\r\nSet-Cookie: x=1",
        "",
        None,
        "/" + "a" * 2001,
    ],
)
def test_anything_else_goes_home(target: str | None) -> None:
    """Another origin, a scheme-relative URL, a backslash trick, header injection or an
    over-long value falls back to /."""
    assert safe_next(target) == "/"

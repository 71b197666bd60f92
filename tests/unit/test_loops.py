"""Loop bounds: ordinals in messages, and one `max_iterations` bounding every step of its loop."""

from __future__ import annotations

import pytest

from grantflow.definitions.loops import Bound, bounds, ordinal


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (23, "23rd"),
        (101, "101st"),
        (111, "111th"),
        (112, "112th"),
    ],
)
def test_ordinals_read_as_english(number: int, text: str) -> None:
    """Ordinals read 2nd, 3rd, 11th, 12th, 13th, 21st, 22nd, 101st."""
    assert ordinal(number) == text


def test_a_bound_on_one_step_applies_to_its_whole_loop() -> None:
    """max_iterations on one step of a loop bounds the other steps of that loop too."""
    found = bounds(
        {"start": ["poll"], "poll": ["again"], "again": ["poll", "end"], "end": []},
        {"start": None, "poll": 3, "again": None, "end": None},
    )
    assert found == {
        "start": Bound(1, None),
        "poll": Bound(3, "poll"),
        "again": Bound(3, "poll"),
        "end": Bound(1, None),
    }


def test_the_largest_declared_bound_wins_for_the_undeclared_steps() -> None:
    """Two declaring steps in one loop keep their own; the others take the largest."""
    found = bounds(
        {"a": ["b"], "b": ["c", "a"], "c": ["a"]},
        {"a": 2, "b": None, "c": 5},
    )
    assert found == {"a": Bound(2, "a"), "b": Bound(5, "c"), "c": Bound(5, "c")}


def test_the_message_names_the_pass_and_where_the_bound_is_declared() -> None:
    """The sentence for a step over its bound names the ordinal and the declaring step."""
    assert Bound(3, "poll").exceeded("again", 4) == (
        "step 'again' would run a 4th time, over its loop's bound of 3 "
        "(max_iterations on step 'poll')"
    )
    assert Bound(1, "poll").exceeded("poll", 2) == (
        "step 'poll' would run a 2nd time, over its loop's bound of 1 (its own max_iterations)"
    )

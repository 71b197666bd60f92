"""Templates cannot exhaust Grantflow: every amplifying operation, the CPU budget, deadlines,
results that must be data, publish-time constants, and YAML aliases, each over its limit."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grantflow.config import load_settings
from grantflow.definitions import budget, sandbox
from grantflow.definitions.expressions import (
    Deadline,
    ExpressionError,
    TemplateLimitExceeded,
    analyse,
    render,
)
from grantflow.definitions.source import parse_text
from grantflow.errors import FailureClass, GrantflowError

LENGTH = "GRANTFLOW_TEMPLATE_MAX_LENGTH"
DIGITS = "GRANTFLOW_TEMPLATE_MAX_DIGITS"
CONTEXT: dict[str, Any] = {"input": {"x": 3, "s": "ab", "tab": "a\tb"}, "identity": {}}
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture
def limits(request: pytest.FixtureRequest) -> Iterator[None]:
    """Template limits from settings for one test (`request.param`), the defaults after."""
    sandbox.configure(load_settings(**getattr(request, "param", {})))
    yield
    sandbox.configure(load_settings())


def _refused(template: str, context: dict[str, Any] | None = None) -> TemplateLimitExceeded:
    with pytest.raises(TemplateLimitExceeded) as caught:
        render({"value": template}, context or CONTEXT, where="hostile.config")
    error = caught.value
    assert error.failure_class == FailureClass.SAFETY
    assert error.code == "template_limit_exceeded"
    assert error.message.startswith("hostile.config.value '") or error.message.startswith(
        'hostile.config.value "'
    )
    return error


@pytest.mark.parametrize(
    ("template", "phrase"),
    [
        ("{{ 7 ** (10 ** 7) }}", "over the template number limit of 1,000 digits"),
        ("{{ 7 ** 6000 > input.x }}", "over the template number limit of 1,000 digits"),
        ("{{ (10 ** 600) * (10 ** 600) }}", "over the template number limit of 1,000 digits"),
        ("{{ 'x' * 10 ** 9 }}", "over the template length limit of 1,000,000"),
        ("{{ [1] * 10 ** 9 }}", "over the template length limit of 1,000,000"),
        ("{{ range(10 ** 9) | list }}", "over the template length limit of 1,000,000"),
        ("{{ '%999999999d' % 1 }}", "over the template length limit of 1,000,000"),
        ("{{ 'x'.ljust(10 ** 9) }}", "over the template length limit of 1,000,000"),
        ("{{ '{:>999999999}'.format(1) }}", "over the template length limit of 1,000,000"),
        ("{{ 'x' | center(10 ** 9) }}", "over the template length limit of 1,000,000"),
        ("{{ input.tab.expandtabs(10 ** 9) }}", "over the template length limit of 1,000,000"),
        ("{{ input.s | replace('a', 'a' * 900000) | replace('a', 'a' * 900000) }}", "1,000,000"),
        ("{{ range(10) | join('x' * 200000) }}", "over the template length limit of 1,000,000"),
        ("{{ [1] | batch(10 ** 9, 0) | list }}", "over the template length limit of 1,000,000"),
        ("{{ lipsum(10 ** 6) }}", "over the template length limit of 1,000,000"),
        (
            "{% set ns = namespace(x='ab') %}{% for i in range(40) %}"
            "{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x | length }}",
            "over the template length limit of 1,000,000",
        ),
        (
            "{% set s = 'x' * 900000 %}{% for i in range(100000) %}{{ s }}{% endfor %}",
            "the rendered text would be",
        ),
    ],
)
def test_each_amplifying_operation_fails_naming_its_limit(template: str, phrase: str) -> None:
    """Powers, products, repetition, padding, formatting, joins, replaces, ranges and output
    over a limit fail with class safety, the limit's value and the setting that raises it."""
    error = _refused(template)
    assert phrase in error.message
    assert (DIGITS if "digits" in phrase else LENGTH) in error.message


@pytest.mark.parametrize("limits", [{"template_cpu_seconds": 0.2}], indirect=True)
def test_a_template_over_its_cpu_budget_is_stopped(limits: None) -> None:
    """A render looping for long is interrupted at its CPU budget, naming the budget."""
    error = _refused(LOOP)
    assert "more than 0.2s of CPU, the template CPU budget" in error.message
    assert "GRANTFLOW_TEMPLATE_CPU_SECONDS" in error.message


@pytest.mark.parametrize("limits", [{"template_cpu_seconds": 0.2}], indirect=True)
def test_a_render_after_the_watchdog_fell_asleep_is_still_stopped(limits: None) -> None:
    """The watchdog sleeps after a second in which no render was armed; a render wakes it,
    and it sleeps again (whether or not the render was still going when it woke); an endless
    render after that is still stopped."""
    render({"value": "{{ input.x }}"}, CONTEXT, where="quick.config")  # (the watchdog runs)
    _until_the_watchdog_sleeps()
    # a render that ends before the watchdog wakes: it sleeps again, ready to be woken
    render({"value": "{{ input.x }}"}, CONTEXT, where="quick.config")
    _until_the_watchdog_sleeps()
    error = _refused(LOOP)
    assert "more than 0.2s of CPU, the template CPU budget" in error.message
    assert not budget._watchdog._sleeping


def _until_the_watchdog_sleeps() -> None:
    deadline = time.monotonic() + 30
    while not budget._watchdog._sleeping:
        assert time.monotonic() < deadline, "the watchdog never fell asleep"
        time.sleep(0.05)


@pytest.mark.parametrize("limits", [{"template_cpu_seconds": 60}], indirect=True)
def test_a_template_past_its_step_timeout_is_stopped(limits: None) -> None:
    """A render that outlives the step's timeout is stopped, naming the timeout."""
    deadline = Deadline(0.2, "the step's timeout (200ms)", "raise the step's `timeout`")
    with pytest.raises(TemplateLimitExceeded) as caught:
        render({"value": LOOP}, CONTEXT, where="slow.config", deadline=deadline)
    assert caught.value.message == (
        f"slow.config.value {LOOP!r}: rendering was stopped: it ran past the step's timeout (200ms)"
    )
    assert caught.value.next_action == "make the template do less, or raise the step's `timeout`"


@pytest.mark.parametrize(
    "limits", [{"step_output_max_bytes": 1024, "template_max_length": 1000}], indirect=True
)
def test_the_rendered_config_is_held_to_the_step_output_limit(limits: None) -> None:
    """Many strings within the length limit still cannot make a config over the output limit."""
    config = {f"k{i}": "{{ 'x' * 300 }}" for i in range(5)}
    with pytest.raises(TemplateLimitExceeded) as caught:
        render(config, CONTEXT, where="big.config")
    assert "over 1,024 bytes, the step output limit" in caught.value.message
    assert "GRANTFLOW_STEP_OUTPUT_MAX_BYTES" in caught.value.message


@pytest.mark.parametrize(
    ("template", "phrase"),
    [
        ("{{ [input.nope] }}", "input has no field 'nope'"),
        ("{{ {'a': identity.employment_type} }}", "identity has no field 'employment_type'"),
        ("{{ steps.lookup.output }}", "step 'lookup' has not run (yet) on this path"),
        ("{{ 1e308 * 10 }}", "the result is inf, which JSON cannot carry"),
        ("{{ input.items() }}", "the result is a dict_items, not data"),
        ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(1) }}", "recursed too deeply"),
        ("{{ 'a\\x00b' }}", "must not contain a NUL character (\\u0000); it cannot be stored"),
        ("x{{ 'a\\ud800' }}", "a lone surrogate (\\ud800), which is not valid Unicode"),
    ],
)
def test_a_result_that_is_not_data_is_an_expression_error(template: str, phrase: str) -> None:
    """A missing value inside a list, a non-finite number or a Python object fails the
    render naming the step's field and the expression, never later in the database."""
    with pytest.raises(ExpressionError) as caught:
        render({"v": template}, {**CONTEXT, "steps": {}}, where="map.config")
    assert caught.value.code == "expression_error"
    assert caught.value.failure_class == FailureClass.VALIDATION
    assert caught.value.message.startswith(f"map.config.v {template!r}")
    assert phrase in caught.value.message


def test_iterables_become_lists_and_keys_text() -> None:
    """A range, a generator of a filter and non-text keys render as JSON would hold them."""
    rendered = render(
        {"r": "{{ range(3) }}", "m": "{{ [1, 2] | map('string') }}", "d": "{{ {1: none} }}"},
        CONTEXT,
    )
    assert rendered == {"r": [0, 1, 2], "m": ["1", "2"], "d": {"1": None}}


@pytest.mark.parametrize(
    ("template", "phrase"),
    [
        ("{{ 7 ** (10 ** 7) }}", "7 ** 10000000 would have about 9,030,900 digits"),
        ("{{ 7 ** 6000 > input.x }}", "7 ** 6000 would have about 5,418 digits"),
        ("{{ 'x' * 10 ** 9 }}", "repeating a str 1,000,000,000 times"),
        ("{% for i in range(10 ** 9) %}{% endfor %}", "range(1000000000,)"),
    ],
)
def test_publishing_finds_constants_over_the_limits_without_computing_them(
    template: str, phrase: str
) -> None:
    """The gate's analysis folds constant arithmetic under the same checks: the finding names
    the limit, and nothing huge is ever computed (Jinja's own folding skips these operators)."""
    findings = analyse(template).findings
    assert [f.code for f in findings] == ["template_limit_exceeded"]
    assert phrase in findings[0].message


def test_an_integer_literal_too_long_to_read_is_a_compile_finding() -> None:
    """A 5000-digit literal is reported as a template that does not compile, not a crash."""
    findings = analyse("{{ " + "7" * 5000 + " }}").findings
    assert [f.code for f in findings] == ["template_invalid"]


def _outcome(template: str, context: dict[str, Any]) -> Any:
    """The rendered value, or the limit error it raised."""
    try:
        return render(template, context)
    except TemplateLimitExceeded as exc:
        return exc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.integers(min_value=-(10**6), max_value=10**6),
    exponent=st.integers(min_value=0, max_value=20_000),
)
def test_powers_are_exact_or_refused(base: int, exponent: int) -> None:
    """`a ** b` is either Python's exact value within the digit limit, or refused when its
    value could be over it; a result over the limit is never computed."""
    true_digits = 1 if abs(base) <= 1 else math.floor(exponent * math.log10(abs(base))) + 1
    value = _outcome("{{ input.a ** input.b }}", {"input": {"a": base, "b": exponent}})
    if isinstance(value, TemplateLimitExceeded):
        assert DIGITS in value.message
        assert true_digits > 1000 * 0.4  # refused only when the estimate was near the limit
    else:
        assert value == base**exponent
        assert true_digits <= 1001


@settings(max_examples=60, deadline=None)
@given(
    # (no NUL and no lone surrogate (Cs): a result holding one is refused as unstorable, which
    # another test covers)
    text=st.text(
        st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
        min_size=0,
        max_size=40,
    ),
    times=st.integers(min_value=-5, max_value=10**8),
    as_list=st.booleans(),
)
def test_repetition_is_exact_or_refused(text: str, times: int, as_list: bool) -> None:
    """`s * n` (a string or a list) is exact when within the length limit, else refused."""
    value: Any = list(text) if as_list else text
    context = {"input": {"v": value, "n": times}}
    result = _outcome("{{ [(input.v * input.n) | length, (input.v * input.n)[:3]] }}", context)
    if isinstance(result, TemplateLimitExceeded):
        assert LENGTH in result.message
        assert len(value) * times > 1_000_000
    else:
        head = (value * min(max(times, 0), 3))[:3]
        assert result == [len(value) * max(times, 0), head]


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=-(10**10), max_value=10**10),
    stop=st.integers(min_value=-(10**10), max_value=10**10),
    step=st.integers(min_value=1, max_value=10**4),
)
def test_ranges_are_exact_or_refused(start: int, stop: int, step: int) -> None:
    """`range(a, b, c)` has its exact length within the limit, else is refused."""
    context = {"input": {"a": start, "b": stop, "c": step}}
    length = _outcome("{{ range(input.a, input.b, input.c) | length }}", context)
    if isinstance(length, TemplateLimitExceeded):
        assert LENGTH in length.message
        assert len(range(start, stop, step)) > 1_000_000
    else:
        assert length == len(range(start, stop, step))


# --- YAML documents ---------------------------------------------------------------------------


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a: &a ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx"]']
    previous = "a"
    for name in "bcdefghijk"[:levels]:
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    return "name: bomb\nsteps: []\nvalues:\n" + "\n".join("  " + line for line in lines)


def test_a_yaml_alias_bomb_counts_at_its_expanded_size() -> None:
    """A few hundred bytes of aliases that would expand to gigabytes are refused (413)."""
    text = _alias_bomb()
    assert len(text) < 1000
    with pytest.raises(GrantflowError) as caught:
        parse_text(text, name="bomb.yaml")
    assert caught.value.http_status == 413
    assert caught.value.code == "document_too_large"
    assert "over the document limit (setting GRANTFLOW_MAX_BODY_BYTES)" in caught.value.message


def test_a_self_referencing_yaml_alias_is_refused() -> None:
    """An alias inside its own anchor would make an infinite document: a 400 naming it."""
    with pytest.raises(GrantflowError) as caught:
        parse_text("a: &a [1, *a]\n")
    assert caught.value.http_status == 400
    assert "refers to its own anchor" in caught.value.message


def test_modest_yaml_aliases_still_work() -> None:
    """Anchors and aliases that stay within the limit expand as usual."""
    assert parse_text("d: &d {retry: 3}\na: *d\nb: *d\n") == {
        "d": {"retry": 3},
        "a": {"retry": 3},
        "b": {"retry": 3},
    }

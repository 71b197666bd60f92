"""The template sandbox: Jinja2's immutable sandbox, with limits on what one template may build.

The sandbox already stops templates reaching outside (no `_` attributes, no mutation). This
module stops them exhausting the process: every operation that can make a value much larger
than its inputs (`**`, `*`, `+`, `%`, padding and joining methods and filters, `range`, `~` and
block concatenation) is checked *before* it runs, against the configured limits; a value over a
limit fails with `template_limit_exceeded` (class `safety`) naming the limit, its value and the
setting that raises it. Filters are never run at compile time (constant folding), and the
operators above are intercepted, so compiling a template (publishing) evaluates nothing costly.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import TemplateRuntimeError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg, generate_lorem_ipsum, missing

from grantflow.errors import FailureClass, ValidationError

_LOG10_2 = 0.30103


class ExpressionError(ValidationError):
    """A template or condition failed to render or evaluate at run time."""

    code = "expression_error"


class TemplateLimitExceeded(ExpressionError):
    """A template tried to build more than the limits allow, or ran out of time."""

    code = "template_limit_exceeded"
    failure_class = FailureClass.SAFETY


class MissingValue(UndefinedError):
    """A template used a value the run context does not have (`obj` lacks `name`)."""

    def __init__(self, message: str | None = None, *, obj: Any = None, name: Any = None):
        super().__init__(message)
        self.obj = obj
        self.name = name


class Missing(StrictUndefined):
    """Strict: using a missing value fails, and the error says which object lacked what."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        if exc is UndefinedError:
            exc = functools.partial(MissingValue, obj=obj, name=name)  # type: ignore[assignment]
        super().__init__(hint, obj, name, exc)


@dataclass(frozen=True)
class Limits:
    """What one template may build; set from `GRANTFLOW_*` settings (see config.py)."""

    max_length: int = 1_000_000  # characters of a string, items of a list or range
    max_digits: int = 1_000  # decimal digits of an integer
    cpu_seconds: float = 1.0  # CPU one render may use
    output_bytes: int = 1024 * 1024  # JSON size of a step's rendered config (and output)
    context_bytes: int = 16 * 1024 * 1024  # JSON size of a run's context


_limits = Limits()


def configure(settings: Any) -> None:
    """Use these settings' template limits in this process (the API and workers call it)."""
    global _limits
    _limits = Limits(
        max_length=settings.template_max_length,
        max_digits=settings.template_max_digits,
        cpu_seconds=settings.template_cpu_seconds,
        output_bytes=settings.step_output_max_bytes,
        context_bytes=settings.run_context_max_bytes,
    )


def limits() -> Limits:
    return _limits


def too_long(what: str, size: int) -> NoReturn:
    limit = _limits.max_length
    raise TemplateLimitExceeded(
        f"{what} would be {size:,} long: over the template length limit of {limit:,} "
        "characters or items (setting GRANTFLOW_TEMPLATE_MAX_LENGTH)",
        next_action="build less in the template, or raise GRANTFLOW_TEMPLATE_MAX_LENGTH",
        limit="template_max_length",
        limit_value=limit,
    )


def too_many_digits(what: str, digits: int) -> NoReturn:
    limit = _limits.max_digits
    raise TemplateLimitExceeded(
        f"{what} would have about {digits:,} digits: over the template number limit of "
        f"{limit:,} digits (setting GRANTFLOW_TEMPLATE_MAX_DIGITS)",
        next_action="compute smaller numbers, or raise GRANTFLOW_TEMPLATE_MAX_DIGITS",
        limit="template_max_digits",
        limit_value=limit,
    )


def _length(value: Any) -> int | None:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset | range):
        return len(value)
    return None


def checked(value: Any, what: str = "a value") -> Any:
    """`value`, if it is within the limits."""
    if isinstance(value, int) and not isinstance(value, bool):
        bits = value.bit_length()
        if bits * _LOG10_2 > _limits.max_digits + 1:
            too_many_digits(what, int(bits * _LOG10_2))
        return value
    size = _length(value)
    if size is not None and size > _limits.max_length:
        too_long(what, size)
    return value


def _digits(bits: float) -> int:
    return int(bits * _LOG10_2)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    ints = (
        isinstance(left, int)
        and isinstance(right, int)
        and not isinstance(left, bool)
        and not isinstance(right, bool)
    )
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        digits = _digits(left.bit_length() * right)
        if digits > _limits.max_digits:
            too_many_digits(f"{left} ** {right}", digits)
    elif operator == "*":
        if ints:
            digits = _digits(left.bit_length() + right.bit_length())
            if digits > _limits.max_digits:
                too_many_digits("the product", digits)
        for seq, times in ((left, right), (right, left)):
            size = _length(seq)
            if size is not None and isinstance(times, int) and size * times > _limits.max_length:
                too_long(f"repeating a {type(seq).__name__} {times:,} times", size * times)
    elif operator == "+":
        first, second = _length(left), _length(right)
        if first is not None and second is not None and first + second > _limits.max_length:
            too_long("the concatenation", first + second)
    elif operator == "%" and isinstance(left, str | bytes):
        _check_percent_format(left)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def _check_percent_format(fmt: str | bytes) -> None:
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    for match in _PERCENT_SPEC.finditer(text):
        for part in match.groups():
            if part == "*":
                raise TemplateLimitExceeded(
                    "a %-format width or precision taken from an argument (*) is not allowed "
                    "in templates",
                    next_action="write the width into the format",
                )
            if part is not None and int(part) > _limits.max_length:
                too_long("a formatted field", int(part))


def _check_format_spec(fmt: str) -> None:
    """`str.format`: a field's width or precision must be within the length limit."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the call itself reports the malformed format
    for _literal, name, spec, _conversion in fields:
        if name is None or not spec:
            continue
        if "{" in spec:
            raise TemplateLimitExceeded(
                "a format width or precision taken from an argument ({…}) is not allowed in "
                "templates",
                next_action="write the width into the format",
            )
        for number in _NUMBER.findall(spec):
            if int(number) > _limits.max_length:
                too_long("a formatted field", int(number))


def _check_join(separator: Any, items: list[Any]) -> None:
    size = sum(len(item) if isinstance(item, str | bytes) else 8 for item in items)
    size += len(separator) * max(len(items) - 1, 0)
    if size > _limits.max_length:
        too_long("the joined text", size)


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if not isinstance(text, str | bytes) or not isinstance(old, str | bytes):
        return
    if not isinstance(new, str | bytes):
        return
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    size = len(text) + found * (len(new) - len(old))
    if size > _limits.max_length:
        too_long("the replaced text", size)


def _int_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Check a call of a `str` (or `bytes`) method before it runs; returns the arguments
    (an iterator given to `join` is read once, here)."""
    wrapped = getattr(obj, "__wrapped__", None)  # the sandbox's str.format wrapper
    if wrapped is not None and isinstance(getattr(wrapped, "__self__", None), str):
        _check_format_spec(wrapped.__self__)
        return args
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str | bytes):
        return args
    name = getattr(obj, "__name__", "")
    if name in ("ljust", "rjust", "center", "zfill"):
        width = _int_arg(args, kwargs, 0, "width")
        if isinstance(width, int) and width > _limits.max_length:
            too_long(f"{name}({width})", width)
    elif name == "expandtabs":
        size = _int_arg(args, kwargs, 0, "tabsize")
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        if isinstance(size, int) and len(owner) + tabs * size > _limits.max_length:
            too_long("the expanded text", len(owner) + tabs * size)
    elif name == "replace":
        _check_replace(owner, *args, **kwargs)
    elif name == "join" and args:
        items = list(args[0])
        _check_join(owner, items)
        return (items, *args[1:])
    elif name == "translate":
        raise TemplateLimitExceeded(
            "str.translate is not available in templates", next_action="use replace"
        )
    return args


def safe_range(*args: int) -> range:
    result = range(*args)
    if len(result) > _limits.max_length:
        too_long(f"range{args}", len(result))
    return result


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if isinstance(n, int) and isinstance(max, int) and n * max * 12 > _limits.max_length:
        too_long(f"lipsum({n})", n * max * 12)
    return generate_lorem_ipsum(n, html, min, max)


def bounded_concat(parts: Iterable[Any]) -> str:
    """Join template output (blocks, macros, `~`), stopping as soon as it is over the limit."""
    out: list[str] = []
    size = 0
    for part in parts:
        text = part if isinstance(part, str) else str(part)
        size += len(text)
        if size > _limits.max_length:
            too_long("the rendered text", size)
        out.append(text)
    return "".join(out)


# --- filters: checked before they run, and never run at compile time -------------------------


def _filter_center(value: Any, width: Any = 80) -> None:
    if isinstance(width, int) and width > _limits.max_length:
        too_long(f"center({width})", width)


def _filter_indent(value: Any, width: Any = 4, *_args: Any, **_kwargs: Any) -> None:
    lines = str(value).count("\n") + 1
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if len(str(value)) + lines * pad > _limits.max_length:
        too_long("the indented text", len(str(value)) + lines * pad)


def _filter_format(value: Any, *_args: Any, **_kwargs: Any) -> None:
    _check_percent_format(str(value))


def _filter_join(value: Any, d: Any = "", attribute: Any = None) -> None:
    if attribute is None and isinstance(value, list | tuple | range):
        _check_join(str(d), list(value))


def _filter_replace(s: Any, old: Any, new: Any, count: Any = None) -> None:
    _check_replace(str(s), old, new, -1 if count is None else count)


def _filter_wordwrap(s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    wrap = kwargs.get("wrapstring") or (args[1] if len(args) > 1 else None) or "\n"
    lines = len(str(s)) // max(width if isinstance(width, int) else 1, 1) + 1
    if len(str(s)) + lines * len(str(wrap)) > _limits.max_length:
        too_long("the wrapped text", len(str(s)) + lines * len(str(wrap)))


def _filter_batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    if fill_with is not None and isinstance(linecount, int) and linecount > _limits.max_length:
        too_long(f"batch({linecount})", linecount)


def _filter_slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    if isinstance(slices, int) and slices > _limits.max_length:
        too_long(f"slice({slices})", slices)


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "format": _filter_format,
    "join": _filter_join,
    "replace": _filter_replace,
    "wordwrap": _filter_wordwrap,
    "batch": _filter_batch,
    "slice": _filter_slice,
}


def _guarded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, checked before it runs and its result after; marked `pass_context` so
    the compiler never folds it into a constant (running it at publish time)."""
    pass_arg = _PassArg.from_obj(original)
    check = _FILTER_CHECKS.get(name)

    @pass_context
    @functools.wraps(original)
    def run(context: Context, *args: Any, **kwargs: Any) -> Any:
        if check is not None:
            check(*args, **kwargs)
        if pass_arg is _PassArg.context:
            result = original(context, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = original(context.eval_ctx, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = original(context.environment, *args, **kwargs)
        else:
            result = original(*args, **kwargs)
        return checked(result, f"the result of the {name} filter")

    run.jinja_pass_arg = _PassArg.context  # type: ignore[attr-defined]
    return run


class _CodeGenerator(CodeGenerator):
    """`a ~ b` joins through the environment's bounded join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with size checks on every amplifying operation."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(bounded_concat)

    def __init__(self) -> None:
        super().__init__(undefined=Missing, autoescape=False, keep_trailing_newline=True)
        self.globals["range"] = safe_range
        self.globals["lipsum"] = _lipsum
        self.filters = {
            name: _guarded_filter(name, original) for name, original in self.filters.items()
        }

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return checked(self.binop_table[operator](left, right), f"the result of {operator!r}")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        args = _check_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return checked(result, f"the result of {getattr(__obj, '__name__', 'the call')}()")

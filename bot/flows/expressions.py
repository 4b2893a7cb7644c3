"""Templates and conditions for flows: Jinja2 in its sandbox, never `eval`."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final, cast

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import TemplateError
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate, native_concat
from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)

# Names every template may read without a state having filled them.
BUILTIN_NAMES = frozenset(
    {"vars", "label", "true", "false", "none", "range", "guess", "picked", "done"}
)


class ExpressionError(ValueError):
    """A template or expression does not parse."""


def check_syntax(source: str, *, expression: bool = False) -> None:
    try:
        _ENV.parse(_as_template(source, expression))
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"{exc.message} in {source!r}") from exc


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render a `{{ templated }}` text; an undefined name renders as nothing."""
    if "{" not in source:
        return source
    key = _memo_key(source, False, context)
    if key is not None and key in _MEMO:
        return cast(str, _MEMO[key])
    try:
        text = _compiled(source, False).render(context).strip()
    except TemplateError:
        text = source
    _remember(key, text)
    return text


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate an expression; errors (e.g. comparing an unset slot) give None."""
    key = _memo_key(source, True, context)
    if key is not None and key in _MEMO:
        return _MEMO[key]
    try:
        value = _compiled(source, True).render(context)
    except (TemplateError, TypeError):
        value = None
    _remember(key, value)
    return value


# Rendering is a pure function of the values a template reads, and most turns render the same
# questions and test the same conditions on the same few answers (a role, a yes or no): the
# result is remembered by those values, which is a tenth of the cost of a Jinja render (a new
# context, the sandbox's checks). Free text a user typed makes new keys; the memo is bounded.
_MEMO: dict[tuple[Any, ...], Any] = {}
_MEMO_SIZE: Final = 8192
_UNSURE: Final = frozenset({"random", "shuffle"})  # filters whose result is not the input's alone


class _Unfrozen(Exception):
    """A value read has no stable hashable form: that render is not remembered."""


def _remember(key: tuple[Any, ...] | None, value: Any) -> None:
    if key is None:
        return
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.clear()
    _MEMO[key] = value


def _memo_key(source: str, expression: bool, context: Mapping[str, Any]) -> tuple[Any, ...] | None:
    reads = _reads(source, expression)
    if reads is None:
        return None
    try:
        values = tuple(_frozen(_read(context, name, attr)) for name, attr in reads)
    except _Unfrozen:
        return None
    return (source, expression, values)


_ABSENT: Final = object()


def _read(context: Mapping[str, Any], name: str, attr: str | None) -> Any:
    value = context.get(name, _ABSENT)
    if attr is None or value is _ABSENT:
        return value
    if not isinstance(value, Mapping):
        raise _Unfrozen
    return value.get(attr, _ABSENT)


def _frozen(value: Any) -> Any:
    if value is _ABSENT or value is None:
        return value
    if isinstance(value, str | int | float | bool):
        return (type(value), value)  # True, 1 and 1.0 render differently
    if isinstance(value, list | tuple):
        return (list, tuple(_frozen(v) for v in value))
    if isinstance(value, Mapping):
        return (dict, tuple((k, _frozen(v)) for k, v in sorted(value.items())))
    raise _Unfrozen


@lru_cache(maxsize=4096)
def _reads(source: str, expression: bool) -> tuple[tuple[str, str | None], ...] | None:
    """The (name, attribute) pairs a template reads from its context (`vars` and `label` by
    attribute, other names whole); None when that cannot be told (a name read by a computed
    key, a filter whose result is not its input's alone)."""
    try:
        ast = _ENV.parse(_as_template(source, expression))
    except TemplateSyntaxError:
        return ()  # it always renders the same (its source, or None)
    if any(f.name in _UNSURE for f in ast.find_all(nodes.Filter)):
        return None
    reads: dict[tuple[str, str | None], None] = {}
    for name in sorted(meta.find_undeclared_variables(ast)):
        if name not in {"vars", "label"}:
            reads[(name, None)] = None
            continue
        uses = [n for n in ast.find_all(nodes.Name) if n.name == name]
        by_attribute = [
            g.attr
            for g in ast.find_all(nodes.Getattr)
            if isinstance(g.node, nodes.Name) and g.node.name == name
        ]
        if len(by_attribute) != len(uses):
            return None
        reads.update(((name, attr), None) for attr in by_attribute)
    return tuple(reads)


def holds(source: str | None, context: Mapping[str, Any]) -> bool:
    return True if source is None else bool(_truthy(evaluate(source, context)))


def names_read(source: str, *, expression: bool = False) -> set[str]:
    """Slot names a template reads; `label.x` counts as reading `x`.

    Names guarded by `is defined` or `| default` are not counted: the author handled absence.
    """
    ast = _ENV.parse(_as_template(source, expression))
    guarded = {
        n.node.name
        for n in ast.find_all((nodes.Test, nodes.Filter))
        if n.name in {"defined", "undefined", "default", "d"} and isinstance(n.node, nodes.Name)
    }
    guarded |= {
        n.node.attr
        for n in ast.find_all((nodes.Test, nodes.Filter))
        if n.name in {"defined", "undefined", "default", "d"} and isinstance(n.node, nodes.Getattr)
    }
    labels = {
        g.attr
        for g in ast.find_all(nodes.Getattr)
        if isinstance(g.node, nodes.Name) and g.node.name == "label"
    }
    return (meta.find_undeclared_variables(ast) | labels) - BUILTIN_NAMES - guarded


def _as_template(source: str, expression: bool) -> str:
    return "{{ (" + source + ") }}" if expression else source


@lru_cache(maxsize=4096)
def _compiled(source: str, expression: bool) -> Template:
    if expression:
        # Render to a native value through a one-element list so booleans and numbers survive.
        return _NATIVE.from_string("{{ (" + source + ") }}")
    return _ENV.from_string(source)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value not in {"", "False", "None", "0", "[]"}
    return bool(value)


class _NativeSandbox(ImmutableSandboxedEnvironment):
    """Sandboxed environment whose renders return Python values, not strings."""

    code_generator_class = NativeCodeGenerator
    concat = staticmethod(native_concat)  # type: ignore[assignment]
    template_class = NativeTemplate


_NATIVE = _NativeSandbox(undefined=ChainableUndefined, autoescape=False)


_GUESS = 20
"""Width assumed for a value a template reads (a label, a slot): most labels are shorter."""
_GUESS_LIST = 40
"""Width assumed for a joined list."""


def longest_render(source: str, variables: Mapping[str, Any]) -> int:
    """An upper bound of how long `source` renders: the longest branch of every `if`, flow vars
    at their length, other values at a generous width (for the pacing lint)."""
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError:
        return len(source)
    return _longest(tree.body, variables)


def _longest(body: Any, variables: Mapping[str, Any]) -> int:
    total = 0
    for node in body:
        if isinstance(node, nodes.Output):
            total += sum(_width(n, variables) for n in node.nodes)
        elif isinstance(node, nodes.If):
            branches = [node.body, *(e.body for e in node.elif_), node.else_]
            total += max(_longest(b, variables) for b in branches)
        elif isinstance(node, nodes.For):
            total += 3 * _longest(node.body, variables)
        elif hasattr(node, "body"):
            total += _longest(node.body, variables)
    return total


def _width(node: Any, variables: Mapping[str, Any]) -> int:
    if isinstance(node, nodes.TemplateData):
        return len(node.data)
    if isinstance(node, nodes.Const):
        return len(str(node.value))
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        if node.node.name == "vars":
            return len(str(variables.get(node.attr, "")))
        return _GUESS
    if isinstance(node, nodes.CondExpr):
        return max(
            _width(node.expr1, variables), _width(node.expr2, variables) if node.expr2 else 0
        )
    if isinstance(node, nodes.Concat):
        return sum(_width(n, variables) for n in node.nodes)
    if isinstance(node, nodes.Filter):
        if node.name == "join":
            return _GUESS_LIST
        return _width(node.node, variables) if node.node is not None else _GUESS
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        owner = node.node.node
        if node.node.attr == "get" and isinstance(owner, nodes.Dict):
            values = [_width(p.value, variables) for p in owner.items]
            values += [_width(a, variables) for a in node.args[1:]]
            return max(values, default=_GUESS)
    return _GUESS

"""Templates and conditions for flows: Jinja2 in its sandbox, never `eval`."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

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
    try:
        return _compiled(source, False).render(context).strip()
    except TemplateError:
        return source


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate an expression; errors (e.g. comparing an unset slot) give None."""
    try:
        value = _compiled(source, True).render(context)
    except (TemplateError, TypeError):
        return None
    return value


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

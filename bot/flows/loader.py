"""Load YAML flow files into typed models, keeping each value's line and column for errors."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.errors import FlowError
from bot.flows.flow import Flow, FlowErrors, Loc
from bot.flows.schema import FlowSpec

__all__ = ["Flow", "FlowErrors", "Loc", "load_flow", "load_flows", "parse_flow"]

_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


def load_flow(path: str | Path, *, check: bool = True) -> Flow:
    """Parse and validate one flow file; raises FlowErrors naming file, line and column."""
    path = Path(path)
    shown = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowErrors([FlowError(f"cannot read: {exc.strerror}", file=shown)]) from exc
    flow = parse_flow(text, path=shown)
    flow = _with_variant_files(flow, path)
    if check:
        from bot.flows.lint import lint

        problems = lint(flow)
        if problems:
            raise FlowErrors(problems)
    return flow


def parse_flow(text: str, *, path: str = "<flow>") -> Flow:
    locations: dict[Loc, tuple[int, int]] = {}
    bare: set[Loc] = set()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise FlowErrors(
            [FlowError(f"not valid YAML: {exc.problem or exc}", file=path, line=line, column=col)]
        ) from exc
    if node is None:
        raise FlowErrors([FlowError("the file is empty", file=path, line=1, column=1)])
    data = _Builder(path, locations, bare).build(node, ())
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            probe = Flow(spec=None, path=path, version=version, locations=locations)  # type: ignore[arg-type]
            line, col = probe.where(loc)
            message = f"{_dotted(loc)}: {err['msg']}"
            if any(loc[: len(b)] == b for b in bare) or loc in bare:
                message += ' (YAML reads a bare yes/no/on/off as a boolean: quote it, e.g. "yes")'
            issues.append(FlowError(message, file=path, line=line, column=col))
        raise FlowErrors(issues) from exc
    return Flow(
        spec=spec, path=path, version=version, locations=locations, bare_booleans=frozenset(bare)
    )


def variant_files(files: list[Path]) -> set[Path]:
    """The files among `files` that another file names as one of its variants (`file:`):
    they are loaded with that flow, not as flows of their own."""
    named: set[Path] = set()
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # its own load reports it
        variants = data.get("variants") if isinstance(data, dict) else None
        for variant in variants if isinstance(variants, list) else []:
            if isinstance(variant, dict) and isinstance(variant.get("file"), str):
                named.add((file.parent / variant["file"]).resolve())
    return {file for file in files if file.resolve() in named}


def load_flows(directory: str | Path) -> dict[str, Flow]:
    """Load every `*.yaml` flow in a directory, keyed by flow id; all problems at once."""
    directory = Path(directory)
    files = sorted(p for p in directory.glob("*.y*ml") if p.suffix in {".yaml", ".yml"})
    if not files:
        raise FlowErrors([FlowError("no flow files (*.yaml) found", file=_display(directory))])
    flows: dict[str, Flow] = {}
    issues: list[FlowError] = []
    variants = variant_files(files)
    for file in files:
        if file in variants:
            continue
        try:
            flow = load_flow(file)
        except FlowErrors as exc:
            issues += exc.issues
            continue
        if flow.id in flows:
            issues.append(
                flow.error(("flow",), f"flow id '{flow.id}' is also used by {flows[flow.id].path}")
            )
        flows[flow.id] = flow
    if issues:
        raise FlowErrors(issues)
    return flows


class _Builder:
    """Turns a composed YAML node tree into plain data, recording every value's position."""

    def __init__(self, path: str, locations: dict[Loc, tuple[int, int]], bare: set[Loc]) -> None:
        self.path = path
        self.locations = locations
        self.bare = bare
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.locations[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if isinstance(key, bool):
                    key = key_node.value  # a bare `yes:` key is meant as the text "yes"
                if key in result:
                    mark = key_node.start_mark
                    raise FlowErrors(
                        [
                            FlowError(
                                f"duplicate key '{key}'",
                                file=self.path,
                                line=mark.line + 1,
                                column=mark.column + 1,
                            )
                        ]
                    )
                result[key] = self.build(value_node, (*loc, key))
                if isinstance(value_node, yaml.CollectionNode):
                    # A block mapping or list starts on the line below its key: point at the key.
                    mark = key_node.start_mark
                    self.locations[(*loc, key)] = (mark.line + 1, mark.column + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        value = self.constructor.construct_object(node, deep=True)
        # `true`/`false` are meant as booleans; a bare yes/no/on/off almost never is.
        bare = isinstance(node, yaml.ScalarNode) and node.style is None
        if isinstance(value, bool) and bare and node.value.lower() in _BOOL_WORDS:
            self.bare.add(loc)
        return value


def _with_variant_files(flow: Flow, path: Path) -> Flow:
    """Load the flows of the variants given as files of their own (beside `path`)."""
    found: dict[str, Flow] = {}
    issues: list[FlowError] = []
    for index, variant in enumerate(flow.spec.variants):
        if variant.file is None:
            continue
        where = ("variants", index, "file")
        try:
            text = (path.parent / variant.file).read_text(encoding="utf-8")
        except OSError as exc:
            issues.append(flow.error(where, f"variant '{variant.id}': cannot read {variant.file}: {exc.strerror}"))  # fmt: skip
            continue
        found[variant.id] = parse_flow(text, path=_display(path.parent / variant.file))
    if issues:
        raise FlowErrors(issues)
    return dataclasses.replace(flow, variant_files=found) if found else flow


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc if p not in {"function-after"}) or "(top)"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)

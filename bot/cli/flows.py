"""`yarigai flows`: check flow files, draw them, and keep their JSON Schema up to date."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from bot.errors import FlowError
from bot.flows.graph import mermaid
from bot.flows.jsonschema import SCHEMA_FILE, schema_text, write_schema
from bot.flows.loader import Flow, FlowErrors, load_flow, variant_files

DEFAULT_FLOWS_DIR = "flows"
DEFAULT_FLOW_FILE = "flows/career.yaml"


@click.group()
def flows() -> None:
    """Check, draw and describe the YAML conversation flows."""


@flows.command()
@click.argument(
    "path",
    envvar="FLOWS_DIR",
    default=DEFAULT_FLOWS_DIR,
    type=click.Path(exists=True, path_type=Path),
)
def check(path: Path) -> None:
    """Load every flow in PATH (a directory or one file) with all lint rules.

    Prints each problem as file:line:col: message, then a line per file; exits 1 on any problem.
    """
    files = _flow_files(path)
    if not files:
        click.echo(f"{path}: no flow files (*.yaml) found", err=True)
        sys.exit(1)
    failed = False
    by_id: dict[str, Flow] = {}
    variants = variant_files(files)
    for file in files:
        if file in variants:
            click.echo(f"{_shown(file)}: a variant, checked with the flow that names it")
            continue
        try:
            flow = load_flow(file)
        except FlowErrors as exc:
            _report(_shown(file), exc.issues)
            failed = True
            continue
        if flow.id in by_id:
            clash = f"flow id '{flow.id}' is also used by {by_id[flow.id].path}"
            _report(flow.path, [flow.error(("flow",), clash)])
            failed = True
            continue
        by_id[flow.id] = flow
        click.echo(f"{flow.path}: ok ({_count(len(flow.spec.states), 'state')})")
    if failed:
        sys.exit(1)


@flows.command()
@click.argument(
    "file", default=DEFAULT_FLOW_FILE, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def graph(file: Path) -> None:
    """Print FILE's states as a Mermaid flowchart (paste into a Markdown file or mermaid.live)."""
    try:
        # Lint problems are drawn, not refused: the picture helps find them.
        flow = load_flow(file, check=False)
    except FlowError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(mermaid(flow), nl=False)


@flows.command()
@click.option(
    "--write",
    is_flag=True,
    help=f"Write {DEFAULT_FLOWS_DIR}/{SCHEMA_FILE} (or FLOWS_DIR's) instead of printing.",
)
@click.option(
    "--flows-dir",
    envvar="FLOWS_DIR",
    default=DEFAULT_FLOWS_DIR,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where --write puts the schema.",
)
def schema(write: bool, flows_dir: Path) -> None:
    """Print the JSON Schema of flow files, generated from the flow models."""
    if write:
        flows_dir.mkdir(parents=True, exist_ok=True)
        click.echo(f"wrote {write_schema(flows_dir)}")
    else:
        click.echo(schema_text(), nl=False)


def _report(shown: str, issues: Sequence[FlowError]) -> None:
    for issue in issues:
        click.echo(str(issue), err=True)
    click.echo(f"{shown}: {_count(len(issues), 'problem')}")


def _flow_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())


def _shown(path: Path) -> str:
    """The path as problems name it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

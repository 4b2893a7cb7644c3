"""`yarigai nlu`: measure how well typed answers are understood."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bot.errors import BotError
from bot.flows.loader import load_flows
from bot.nlu.classifier import DEFAULT_MODEL, THRESHOLDS, build_understander, default_cache_dir
from bot.nlu.eval import evaluate, load_cases

DEFAULT_FLOWS_DIR = "flows"


@click.group()
def nlu() -> None:
    """Free-text understanding: evaluate the classifier on labelled messages."""


@nlu.command("eval")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--flows-dir",
    envvar="FLOWS_DIR",
    default=DEFAULT_FLOWS_DIR,
    show_default=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Where the flow named by FILE is.",
)
@click.option(
    "--model",
    type=click.Choice(sorted(THRESHOLDS)),
    default=DEFAULT_MODEL,
    show_default=True,
    help="Sentence encoder ('ngram': the pure-Python fallback).",
)
@click.option("--mistakes", is_flag=True, help="Also list every wrong message.")
def eval_(file: Path, flows_dir: Path, model: str, mistakes: bool) -> None:
    """Understand every message of the labelled FILE in its state (layout: tests/nlu/dev.yaml).

    Prints accuracy, the wrong-confident rate and a confusion table per question.
    """
    try:
        flow_id, cases = load_cases(file)
        flows = load_flows(flows_dir)
        if flow_id not in flows:
            click.echo(f"{file}: flow '{flow_id}' is not in {flows_dir}", err=True)
            sys.exit(1)
        understand = build_understander(flows.values(), model=model, cache_dir=default_cache_dir())
        report = evaluate(understand, flows[flow_id], cases)
    except BotError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"classifier: {understand.classifier.name}")
    click.echo(report.summary())
    click.echo()
    click.echo(report.confusion())
    if mistakes and report.mistakes():
        click.echo()
        click.echo(report.mistakes())

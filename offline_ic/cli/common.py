"""Helpers shared by the command modules: JSON output and the shared options."""

from __future__ import annotations

import sys
from typing import Any

import click

from offline_ic.escaping import json_text, terminal


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout (stable key order as built, valid UTF-8:
    ``escaping.json_text``)."""
    click.echo(json_text(obj, indent=2))


def warn(message: str) -> None:
    """One line on stderr for something the user should know but that is not an error
    (``message`` is escaped here: pass guest names raw)."""
    click.echo(f"offline-ic: warning: {terminal(message)}", err=True)


def progress(message: str) -> None:
    """A progress line on stderr, only when stderr is a terminal (keeps CI logs and pipes clean)."""
    if sys.stderr.isatty():
        click.echo(message, err=True)


parent_option = click.option(
    "--parent",
    "parent",
    type=click.Path(dir_okay=False),
    default=None,
    help="Parent disk of a differencing VHDX/AVHDX (default: found through the parent locator).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
volume_option = click.option(
    "--volume",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Use volume N (1-based, as `inspect` lists them) when several volumes hold a guest.",
)

"""Helpers shared by the command modules: JSON output and the shared options."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout (stable key order as built, UTF-8)."""
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


# The image the warnings being printed are about (innermost last): set by the fleet
# machinery (cli/many.py) around a target's notices, so that a warning about one image of
# many names it without every caller passing the name down.
_ABOUT: list[str] = []


@contextmanager
def about_image(image: str) -> Iterator[None]:
    """Warnings printed inside name ``image`` (unless they start with it already)."""
    _ABOUT.append(image)
    try:
        yield
    finally:
        _ABOUT.pop()


def warn(message: str) -> None:
    """One line on stderr for something the user should know but that is not an error."""
    if _ABOUT and not message.startswith(_ABOUT[-1]):
        message = f"{_ABOUT[-1]}: {message}"
    click.echo(f"offline-ic: warning: {message}", err=True)


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

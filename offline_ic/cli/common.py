"""Helpers shared by the command modules: JSON output and the shared options."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from offline_ic.escaping import json_text, terminal


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout (stable key order as built, valid UTF-8:
    ``escaping.json_text``)."""
    click.echo(json_text(obj, indent=2))


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
    """One line on stderr for something the user should know but that is not an error
    (``message`` is escaped here: pass guest names raw)."""
    if _ABOUT and not message.startswith(_ABOUT[-1]):
        message = f"{_ABOUT[-1]}: {message}"
    click.echo(f"offline-ic: warning: {terminal(message)}", err=True)


def progress(message: str) -> None:
    """A progress line on stderr, only when stderr is a terminal (keeps CI logs and pipes clean)."""
    if sys.stderr.isatty():
        click.echo(message, err=True)


_parent = click.option(
    "--parent",
    "parent",
    type=click.Path(dir_okay=False),
    default=None,
    help="Parent disk of a differencing VHDX/AVHDX (default: found through the parent locator).",
)


def _allow(_ctx: click.Context, _param: click.Parameter, folders: tuple[str, ...]) -> None:
    from offline_ic.inputs import allow_outside

    allow_outside(folders)


_allow_outside = click.option(
    "--allow-outside",
    type=click.Path(file_okay=False),
    multiple=True,
    metavar="DIR",
    expose_value=False,
    callback=_allow,
    help="Also open disks and parent disks under DIR (repeatable). By default a VM folder's "
    "disks and a differencing disk's parents must resolve inside the folder named or beside "
    "the child.",
)


def parent_option(f: Any) -> Any:
    """``--parent`` and ``--allow-outside``: where the files of a chain may come from."""
    return _parent(_allow_outside(f))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
# writing commands: every check of the real run, then what it would write; nothing written
dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Say what would be written and write nothing; a refusal exits as the real run would.",
)
volume_option = click.option(
    "--volume",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Use volume N (1-based, as `inspect` lists them) when several volumes hold a guest.",
)


def must_be_hive_file(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """A HIVE argument that is a disk image or a .reg file: say which command wants it
    (exit 2) instead of "no 'regf' signature"."""
    from offline_ic.errors import InputError
    from offline_ic.filekind import REG_FILE, file_kind, is_disk_image

    kind = file_kind(value)
    if is_disk_image(kind):
        raise InputError(
            f"{value} is {kind}, not a bare hive file: for the hives inside a disk image use "
            "`offline-ic reg get|set|delete|export IMAGE 'HKLM\\SYSTEM\\...'`"
        )
    if kind == REG_FILE:
        raise InputError(
            f"{value} is {kind}, not a hive: apply it to a disk image with "
            f"`offline-ic reg merge IMAGE {value}`"
        )
    return value

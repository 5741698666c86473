"""Differencing-chain commands: ``merge`` (Merge-VHD) and ``reparent`` (Set-VHD -ParentPath).

Thin wrappers: the work happens in ``offline_ic.image.merge`` and ``offline_ic.image.reparent``.
"""

from __future__ import annotations

import os
from typing import Any

import click

from offline_ic.cli.common import emit_json, json_option, parent_option
from offline_ic.escaping import terminal


def _names(paths: list[str]) -> str:
    return ", ".join(terminal(os.path.basename(p)) for p in paths)


def render_merge(doc: dict[str, Any]) -> None:
    """The merge document as text: what went where, what was checked, what was deleted."""
    target = terminal(doc["into"])
    what = f"{doc['bytes']} bytes in {doc['extents']} extents"
    if doc["dry_run"]:
        click.echo(f"would merge {_names(doc['merged'])} into {target}: {what}")
        verb = "would keep" if doc["kept"] else "would delete"
        click.echo(f"{verb}: {_names(doc['merged'])}")
        return
    click.echo(
        f"merged {_names(doc['merged'])} into {target}: {what}; {_read_back(doc['verified'])}"
    )
    if doc["deleted"]:
        click.echo(f"deleted: {_names(doc['deleted'])}")
    if doc["kept"]:
        click.echo(
            f"kept: {_names(doc['kept'])} (no longer a child of {terminal(doc['into'])}: "
            "its parent changed)"
        )


def _read_back(verified: str | None) -> str:
    return f"read back by {verified}" if verified else "NOT read back (no libvhdi)"


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""

    @group.command("merge")
    @click.argument("child", type=click.Path(dir_okay=False))
    @click.option(
        "--into",
        "into",
        type=click.Path(dir_okay=False),
        default=None,
        help="Ancestor to merge into (default: CHILD's parent); every level between goes in.",
    )
    @click.option("--keep-child", is_flag=True, help="Do not delete the merged files afterwards.")
    @click.option("--dry-run", is_flag=True, help="Say what would be merged; write nothing.")
    @parent_option
    @json_option
    def merge_cmd(
        child: str,
        into: str | None,
        keep_child: bool,
        dry_run: bool,
        parent: str | None,
        as_json: bool,
    ) -> None:
        """Merge the differencing disk CHILD into its parent (Merge-VHD).

        CHILD's sectors go into the parent (or down the chain into --into) as one
        crash-safe transaction, are read back through libvhdi, and then the merged files
        are deleted. Refused (exit 3, nothing written) when a disk that receives data has
        other children, CHILD has children of its own, a file is read-only or locked, or
        the parent linkage does not match.

        \b
        Examples:
          offline-ic merge "Win10_8A1F.avhdx"
          offline-ic merge top.avhdx --into base.vhdx --dry-run
        """
        from offline_ic.image.merge import merge

        doc = merge(child, into=into, parent=parent, keep_child=keep_child, dry_run=dry_run)
        if as_json:
            emit_json(doc)
        else:
            render_merge(doc)

    @group.command("reparent")
    @click.argument("child", type=click.Path(dir_okay=False))
    @click.option(
        "--parent",
        "new_parent",
        required=True,
        type=click.Path(dir_okay=False),
        help="The parent's new path (a VHDX).",
    )
    @click.option(
        "--windows-path",
        default=None,
        help=r"The parent's path on the Windows host (D:\VMs\base.vhdx), for the locator's "
        "absolute path; without it only the relative path is written.",
    )
    @click.option(
        "--ignore-id",
        is_flag=True,
        help="Accept a parent whose DataWriteGuid is not the one CHILD was made from.",
    )
    @click.option("--dry-run", is_flag=True, help="Say what the locator would be; write nothing.")
    @json_option
    def reparent_cmd(
        child: str,
        new_parent: str,
        windows_path: str | None,
        ignore_id: bool,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Point the differencing VHDX CHILD at its parent's new path (Set-VHD -ParentPath).

        The parent locator is rewritten through the VHDX log; CHILD's data does not change.
        Refused (exit 3) when the new parent is not the disk CHILD was made from (its
        DataWriteGuid differs), unless --ignore-id.

        \b
        Examples:
          offline-ic reparent moved/child.avhdx --parent ../base/base.vhdx
          offline-ic reparent child.avhdx --parent base.vhdx --windows-path 'D:\\VMs\\base.vhdx'
        """
        from offline_ic.image.reparent import reparent

        doc = reparent(
            child, new_parent, windows_path=windows_path, ignore_id=ignore_id, dry_run=dry_run
        )
        if as_json:
            emit_json(doc)
            return
        if doc["notes"]:
            click.echo("; ".join(terminal(n) for n in doc["notes"]))
            return
        verb = "would point" if dry_run else "pointed"
        checked = "" if dry_run else "; " + _read_back(doc["verified"])
        click.echo(f"{verb} {terminal(child)} at {terminal(new_parent)}{checked}")
        for key, value in doc["locator"].items():
            click.echo(f"  {key}: {terminal(value)}")

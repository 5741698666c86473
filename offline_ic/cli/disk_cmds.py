"""``resize`` (Resize-VHD) and ``compact`` (Optimize-VHD): thin commands over
``workflows/disks.py``, one target or a fleet (``--from``, ``--jobs``, NDJSON)."""

from __future__ import annotations

from typing import Any

import click

from offline_ic.cli.common import json_option
from offline_ic.cli.many import (
    FleetOptions,
    collect_targets,
    fleet_options,
    images_argument,
    run_targets,
)
from offline_ic.escaping import terminal_doc


def _split_size(args: tuple[str, ...], shrink: bool) -> tuple[tuple[str, ...], str | None]:
    """IMAGE... SIZE: the last argument is SIZE when it reads as one (with
    --shrink-to-partitions SIZE may be left out: the smallest size)."""
    from offline_ic.errors import InputError
    from offline_ic.workflows.disks import parse_new_size

    if args:
        try:
            parse_new_size(args[-1], 0)
            return args[:-1], args[-1]
        except InputError:
            if not shrink:
                raise click.UsageError(
                    f"{args[-1]!r} is not a SIZE (examples: 127GiB, +1GiB, 1073741824)"
                ) from None
    elif not shrink:
        raise click.UsageError("give IMAGE and SIZE")
    return args, None


def _render_resize(doc: dict[str, Any]) -> None:
    doc = terminal_doc(doc)
    change = {"grow": "grown", "shrink": "shrunk"}.get(doc["change"])
    gpt = "; GPT backup header and entries moved to the new end" if doc["gpt_backup_moved"] else ""
    if change is None:
        click.echo(f"{doc['image']}: already {doc['new_size']} bytes; nothing written")
    elif doc["dry_run"]:
        click.echo(
            f"dry run: {doc['image']} would be {change} from {doc['old_size']} to {doc['new_size']} bytes{gpt}; nothing written"
        )
    else:
        click.echo(
            f"{doc['image']}: {change} from {doc['old_size']} to {doc['new_size']} bytes{gpt} "
            f"(file {doc['file_size_before']} -> {doc['file_size_after']} bytes; read back "
            f"through {doc['verified_by'] or 'nothing: libvhdi is not installed'})"
        )


def _render_compact(doc: dict[str, Any]) -> None:
    doc = terminal_doc(doc)
    free = f", {doc['free_blocks']} unused by the file system" if doc["free_blocks"] else ""
    if doc["dry_run"]:
        click.echo(
            f"dry run: {doc['image']}: {doc['file_size_before']} -> {doc['file_size_after']} "
            f"bytes ({doc['bytes_freed']} freed): would drop {doc['zero_blocks']} zero "
            f"block(s){free}; nothing written"
        )
        return
    click.echo(
        f"{doc['image']}: {doc['file_size_before']} -> {doc['file_size_after']} bytes "
        f"({doc['bytes_freed']} freed): {doc['zero_blocks']} zero block(s){free} dropped, "
        f"{doc['moved_blocks']} moved; read back through "
        f"{doc['verified_by'] or 'nothing: libvhdi is not installed'}"
    )


def register(group: click.Group) -> None:
    """Add ``resize`` and ``compact`` to ``group``."""

    @group.command("compact")
    @images_argument
    @click.option(
        "--free-space",
        is_flag=True,
        help="Also drop blocks that lie wholly in free NTFS clusters or free ext2/3/4 blocks "
        "(Optimize-VHD -Mode Full).",
    )
    @click.option("--dry-run", is_flag=True, help="Say what would be dropped; write nothing.")
    @click.option("--force", is_flag=True, help="Compact a VHDX that other disks use as parent.")
    @json_option
    @fleet_options
    def compact_cmd(
        images: tuple[str, ...],
        free_space: bool,
        dry_run: bool,
        force: bool,
        as_json: bool,
        from_file: tuple[str, ...],
        **fleet: Any,
    ) -> None:
        """Give back the space of blocks that hold only zeros, like Optimize-VHD.

        Dynamic and differencing VHDX: all-zero blocks become unallocated (PAYLOAD_BLOCK_ZERO:
        zeros even in a child), the last blocks move into the holes, the file is cut after
        the last one. Every step is one crash-safe VHDX log transaction that keeps the
        virtual disk's content.

        \b
        Examples:
          offline-ic compact disk.vhdx
          offline-ic compact disk.vhdx --free-space --json
          offline-ic compact --from images.txt --jobs 4 --json
        """
        run_targets(
            "compact",
            collect_targets(images, from_file),
            {"free_space": free_space, "dry_run": dry_run, "force": force},
            as_json=as_json,
            render=_render_compact,
            fleet_options=FleetOptions.pop(fleet),
        )

    @group.command("resize")
    @click.argument("args", nargs=-1, metavar="IMAGE... SIZE")
    @click.option(
        "--shrink-to-partitions",
        is_flag=True,
        help="Allow a smaller SIZE, down to the end of the last partition (and the GPT "
        "backup); without SIZE, shrink to exactly that.",
    )
    @click.option(
        "--round",
        "round_to",
        default=None,
        metavar="UNIT",
        help="Round the new size up to a whole UNIT (MiB, 1MiB, 4MiB): Azure wants whole MiB.",
    )
    @click.option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
    @click.option("--force", is_flag=True, help="Resize a VHDX that other disks use as parent.")
    @json_option
    @fleet_options
    def resize_cmd(
        args: tuple[str, ...],
        shrink_to_partitions: bool,
        round_to: str | None,
        dry_run: bool,
        force: bool,
        as_json: bool,
        from_file: tuple[str, ...],
        **fleet: Any,
    ) -> None:
        """Change the virtual size of IMAGE (VHDX, VHD, raw) to SIZE, like Resize-VHD.

        SIZE is bytes or 127GiB, or relative: +1GiB, -512MiB. A GPT's backup header and
        entries move to the new end in the same crash-safe transaction. A smaller size
        needs --shrink-to-partitions and never cuts a partition (exit 3, nothing written).

        \b
        Examples:
          offline-ic resize disk.vhdx 127GiB
          offline-ic resize disk.vhdx +1GiB --round MiB
          offline-ic resize disk.vhdx --shrink-to-partitions
          offline-ic resize --from images.txt +10GiB --jobs 4 --json
        """
        images, size = _split_size(args, shrink_to_partitions)
        run_targets(
            "resize",
            collect_targets(images, from_file),
            {
                "size": size,
                "shrink_to_partitions": shrink_to_partitions,
                "round_to": round_to,
                "dry_run": dry_run,
                "force": force,
            },
            as_json=as_json,
            render=_render_resize,
            fleet_options=FleetOptions.pop(fleet),
        )

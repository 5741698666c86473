"""Image commands: ``snapshot`` (new differencing child), ``verify`` and ``recover``.

Thin wrappers: the work happens in ``offline_ic.image``.
"""

from __future__ import annotations

from typing import Any

import click

from offline_ic.cli.common import dry_run_option, emit_json, json_option, parent_option
from offline_ic.cli.many import (
    FleetOptions,
    collect_targets,
    fleet_options,
    images_argument,
    run_targets,
)
from offline_ic.escaping import terminal


def _render_verify(doc: dict[str, Any]) -> None:
    raw = doc["format"] == "raw"
    for n in doc["notes"]:  # notes and problems can quote parent locators of the image
        if not (raw and n == "raw image: nothing to check"):  # the last line says it
            click.echo(f"note: {terminal(n)}")
    for p in doc["problems"]:
        click.echo(f"problem: {terminal(p)}")
    click.echo(f"{doc['image']}: {'ok' if doc['ok'] else 'PROBLEMS FOUND'} ({_verified(doc)})")


def _verified(doc: dict[str, Any]) -> str:
    """What a verify run checked, in words: a raw file has no structures and libvhdi does
    not read it, so "0 bytes cross-checked" would claim a check that never ran."""
    if doc["format"] == "raw":
        return (
            "raw image: no VHD/VHDX structures to check and nothing to compare with libvhdi; "
            "checked only that no interrupted write is left"
        )
    done = f"{doc['format'].upper()} structures checked"
    if doc["compared_bytes"]:
        return f"{done}; {doc['compared_bytes']} bytes cross-checked with libvhdi"
    return f"{done}; no data compared with libvhdi"


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""

    @group.command("snapshot")
    @click.argument("parent", type=click.Path(dir_okay=False))
    @click.argument("child", type=click.Path(dir_okay=False))
    @click.option(
        "--windows-path",
        default=None,
        help=r"PARENT's path on the Windows host (D:\VMs\golden.vhdx), for the locator's "
        "absolute path; without it only the relative path is written.",
    )
    @dry_run_option
    @json_option
    def snapshot(
        parent: str, child: str, windows_path: str | None, dry_run: bool, as_json: bool
    ) -> None:
        """Create CHILD (.avhdx), a differencing VHDX over the VHDX PARENT.

        Later writes can go into CHILD and leave PARENT untouched.

        \b
        Examples:
          offline-ic snapshot golden.vhdx golden-serviced.avhdx
          offline-ic snapshot golden.vhdx golden-serviced.avhdx --dry-run
        """
        from offline_ic.image.vhdx.create import create_child

        made = create_child(parent, child, windows_path=windows_path, dry_run=dry_run)
        if not as_json:
            if dry_run:
                click.echo(
                    f"would create {child} (differencing, parent {parent}, "
                    f"{made['file_size']} bytes); dry run, nothing written"
                )
            else:
                click.echo(f"created {child} (differencing, parent {parent})")
            return
        size = made["file_size"]
        doc: dict[str, Any] = {"image": parent, "child": child}
        if not dry_run:
            doc["written_to"] = child
        doc |= {
            "dry_run": dry_run,
            "changed": False,  # PARENT is only read; CHILD is a new file
            "pages_written": 0 if dry_run else -(-size // 4096),
            "bytes_written": 0 if dry_run else size,
        }
        if dry_run:
            doc |= {"would_write_pages": -(-size // 4096), "would_write_bytes": size}
        emit_json(doc | {"verified": False, **made})

    @group.command("verify")
    @images_argument
    @parent_option
    @json_option
    @fleet_options
    def verify(
        images: tuple[str, ...],
        from_file: tuple[str, ...],
        parent: str | None,
        as_json: bool,
        **fleet: Any,
    ) -> None:
        """Check IMAGE's structures and compare our reader with libvhdi (exit 1 on problems).

        \b
        Examples:
          offline-ic verify win10.vhdx
          offline-ic verify --from images.txt --json --jobs 2
        """
        from offline_ic.errors import CheckFailed

        def fail_one(doc: dict[str, Any], _seconds: float) -> None:
            if not doc["ok"]:
                raise CheckFailed(f"{doc['image']}: {len(doc['problems'])} problem(s) found")

        run_targets(
            "verify",
            collect_targets(images, from_file),
            {"parent": parent},
            as_json=as_json,
            render=_render_verify,
            fleet_options=FleetOptions.pop(fleet),
            after_one=fail_one,
        )

    @group.command("recover")
    @click.argument("image", type=click.Path(dir_okay=False))
    @parent_option
    @dry_run_option
    @json_option
    def recover(image: str, parent: str | None, dry_run: bool, as_json: bool) -> None:
        """Finish or undo an interrupted write: replay a pending VHDX log, roll back a journal.

        \b
        Examples:
          offline-ic recover golden.vhdx
          offline-ic recover golden.raw --json
          offline-ic recover golden.vhdx --dry-run    # what it would replay; writes nothing
        """
        if dry_run:
            from offline_ic.image.recovery_plan import planned_recovery

            done = planned_recovery(image, parent=parent)
        else:
            from offline_ic.image.verify import recover_image

            done = recover_image(image, parent=parent)
        if not as_json:
            click.echo(f"{image}: {done}" + ("; dry run, nothing written" if dry_run else ""))
            return
        acted = done != "nothing to recover" and not dry_run
        emit_json(
            {
                "image": image,
                "done": done,
                "dry_run": dry_run,
                "changed": acted,
                "written_to": image if acted else None,
                "verified": False,
            }
        )

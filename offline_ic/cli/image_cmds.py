"""Image commands: ``snapshot`` (new differencing child), ``verify`` and ``recover``.

Thin wrappers: the work happens in ``offline_ic.image``.
"""

from __future__ import annotations

import click

from offline_ic.cli.common import emit_json, json_option, parent_option


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""

    @group.command("snapshot")
    @click.argument("parent", type=click.Path(dir_okay=False))
    @click.argument("child", type=click.Path(dir_okay=False))
    def snapshot(parent: str, child: str) -> None:
        """Create CHILD (.avhdx), a differencing VHDX over the VHDX PARENT.

        Later writes can go into CHILD and leave PARENT untouched.
        """
        from offline_ic.image.vhdx.create import create_child

        create_child(parent, child)
        click.echo(f"created {child} (differencing, parent {parent})")

    @group.command("verify")
    @click.argument("image", type=click.Path(dir_okay=False))
    @parent_option
    @json_option
    def verify(image: str, parent: str | None, as_json: bool) -> None:
        """Check IMAGE's structures and compare our reader with libvhdi (exit 1 on problems)."""
        from offline_ic.errors import CheckFailed
        from offline_ic.image.verify import verify_image

        rep = verify_image(image, parent=parent)
        if as_json:
            emit_json(rep.to_dict())
        else:
            for n in rep.notes:
                click.echo(f"note: {n}")
            for p in rep.problems:
                click.echo(f"problem: {p}")
            click.echo(
                f"{image}: {'ok' if rep.ok else 'PROBLEMS FOUND'} "
                f"({rep.compared_bytes} bytes cross-checked with libvhdi)"
            )
        if not rep.ok:
            raise CheckFailed(f"{image}: {len(rep.problems)} problem(s) found")

    @group.command("recover")
    @click.argument("image", type=click.Path(dir_okay=False))
    @parent_option
    def recover(image: str, parent: str | None) -> None:
        """Finish or undo an interrupted write: replay a pending VHDX log, roll back a journal."""
        from offline_ic.image.verify import recover_image

        click.echo(f"{image}: {recover_image(image, parent=parent)}")

"""``convert``: write any disk we read as a new fixed VHD (Azure), raw file or dynamic VHDX."""

from __future__ import annotations

import sys
import time

import click

from offline_ic.cli.common import emit_json, json_option, parent_option


class _Bar:
    """A one-line progress display on stderr, only on a terminal, at most 5 updates a second."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        pct = 100.0 * done / total if total else 100.0
        click.echo(f"\rconverting: {pct:5.1f}% of {total >> 20} MiB of data", nl=False, err=True)

    def clear(self) -> None:
        if self.enabled and self.last:
            click.echo("\r" + " " * 60 + "\r", nl=False, err=True)


def register(group: click.Group) -> None:
    """Add ``convert`` to ``group``."""

    @group.command("convert")
    @click.argument("src", type=click.Path(dir_okay=False))
    @click.argument("dst", type=click.Path(dir_okay=False))
    @click.option(
        "--to",
        "to",
        type=click.Choice(["vhd-fixed", "raw", "vhdx-dynamic"]),
        default="vhd-fixed",
        show_default=True,
        help="Output format (vhd-fixed is what Azure accepts).",
    )
    @click.option(
        "--align",
        default=None,
        metavar="SIZE",
        help="Round the virtual size up to a multiple of SIZE (default: 1MiB for vhd-fixed, "
        "the logical sector for vhdx-dynamic, none for raw).",
    )
    @click.option("--force", is_flag=True, help="Replace DST if it exists.")
    @parent_option
    @json_option
    def convert_cmd(
        src: str,
        dst: str,
        to: str,
        align: str | None,
        force: bool,
        parent: str | None,
        as_json: bool,
    ) -> None:
        """Write SRC (VHDX, VHD or raw, any chain) as a new image DST.

        Streamed and sparse: only allocated data is read, zero ranges stay holes. DST is
        written under a temporary name and renamed at the end; it never replaces an
        existing file without --force.

        \b
        Examples:
          offline-ic convert golden.vhdx golden.vhd            # fixed VHD for Azure
          offline-ic convert child.avhdx flat.raw --to raw
          offline-ic convert disk.vhd disk.vhdx --to vhdx-dynamic --json
        """
        from offline_ic.image.convert import convert, parse_size

        bar = _Bar()
        try:
            result = convert(
                src,
                dst,
                to=to,
                align=None if align is None else parse_size(align),
                parent=parent,
                force=force,
                progress=bar,
            )
        finally:
            bar.clear()
        if as_json:
            # "image" (the target given) and "written_to" in the words of every command
            emit_json({"image": src, **result.to_dict(), "written_to": dst})
            return
        click.echo(
            f"{dst}: {to}, {result.virtual_size} bytes virtual "
            f"({result.data_bytes_written} bytes of data written, "
            f"{result.zero_bytes_skipped + result.unread_bytes} bytes of zeros left as holes) "
            f"in {result.seconds:.1f} s"
        )

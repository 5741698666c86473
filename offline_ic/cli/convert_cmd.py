"""``convert``: write any disk we read as a new fixed VHD (Azure), raw file or dynamic VHDX."""

from __future__ import annotations

import sys
import time

import click

from offline_ic.cli.common import dry_run_option, emit_json, json_option, parent_option


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


FORMATS = ("vhd-fixed", "raw", "vhdx-dynamic")
# the format each DST extension names (lower case); another extension needs --format
FORMAT_OF_EXTENSION = {
    ".vhd": "vhd-fixed",
    ".vhdx": "vhdx-dynamic",
    ".avhdx": "vhdx-dynamic",
    ".raw": "raw",
    ".img": "raw",
}


def output_format(dst: str, fmt: str | None, old_to: str | None) -> str:
    """The format to write: --format (or its old name --to), else DST's extension; a format
    that contradicts DST's extension is refused (a .raw file holding a VHD footer misleads
    every tool that trusts the name)."""
    import os

    if fmt is not None and old_to is not None and fmt != old_to:
        raise click.UsageError("--format and --to (its old name) name different formats")
    asked = fmt or old_to
    extension = os.path.splitext(dst)[1].lower()
    named = FORMAT_OF_EXTENSION.get(extension)
    if asked is None:
        if named is None:
            raise click.UsageError(
                f"cannot tell the format from DST's extension ({extension or 'none'}): "
                f"name the file .vhd, .vhdx, .avhdx, .raw or .img, or give --format "
                f"{'|'.join(FORMATS)}"
            )
        return named
    if named is not None and named != asked:
        raise click.UsageError(
            f"--format {asked} does not match DST's extension {extension} ({named}): "
            "rename DST or drop --format"
        )
    return asked


def register(group: click.Group) -> None:
    """Add ``convert`` to ``group``."""

    @group.command("convert")
    @click.argument("src", type=click.Path(dir_okay=False))
    @click.argument("dst", type=click.Path(dir_okay=False))
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="Output format (default: from DST's extension: .vhd vhd-fixed, which Azure "
        "accepts; .vhdx/.avhdx vhdx-dynamic; .raw/.img raw).",
    )
    @click.option(
        "--to",
        "old_to",
        type=click.Choice(FORMATS),
        default=None,
        hidden=True,  # its name until 0.x: --to/--output name files elsewhere
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
    @dry_run_option
    @json_option
    def convert_cmd(
        src: str,
        dst: str,
        fmt: str | None,
        old_to: str | None,
        align: str | None,
        force: bool,
        parent: str | None,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Write SRC (VHDX, VHD or raw, any chain) as a new image DST.

        Streamed and sparse: only allocated data is read, zero ranges stay holes. DST is
        written under a temporary name and renamed at the end; it never replaces an
        existing file without --force.

        \b
        Examples:
          offline-ic convert golden.vhdx golden.vhd            # fixed VHD for Azure
          offline-ic convert child.avhdx flat.raw
          offline-ic convert disk.vhd disk.vhdx --json
          offline-ic convert disk.vhd disk.bin --format raw
          offline-ic convert golden.vhdx golden.vhd --dry-run   # checks only, writes nothing
        """
        from offline_ic.image.convert import convert, parse_size

        to = output_format(dst, fmt, old_to)

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
                dry_run=dry_run,
            )
        finally:
            bar.clear()
        if as_json:
            # "image" (the target given), "written_to" and "format" (the word of --format) in
            # the words of every command; "to", format's old name, kept for one release
            doc = {"image": src, **result.to_dict(), "to": result.format}
            emit_json(doc if dry_run else doc | {"written_to": dst})
            return
        if dry_run:
            click.echo(
                f"{dst}: would write {to}, {result.virtual_size} bytes virtual "
                f"({result.would_read_bytes} bytes of allocated data to read, needs at most "
                f"{result.would_need_bytes} bytes free); dry run, nothing written"
            )
            return
        click.echo(
            f"{dst}: {to}, {result.virtual_size} bytes virtual "
            f"({result.data_bytes_written} bytes of data written, "
            f"{result.zero_bytes_skipped + result.unread_bytes} bytes of zeros left as holes) "
            f"in {result.seconds:.1f} s"
        )

"""Browse commands: ``ls``, ``cat``, ``cp`` (no FUSE needed) and ``mount`` (read-only FUSE).

Thin: the work is in ``offline_ic.workflows.browse`` (and ``workflows/fusefs.py``).
Guest names are hostile when printed: every name goes through ``escaping.terminal``
(error lines and warnings are escaped where they are printed: ``cli.main``, ``common.warn``).
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from offline_ic.cli.common import emit_json, json_option, parent_option, warn
from offline_ic.escaping import terminal

if TYPE_CHECKING:
    from offline_ic.volumes import Volume
    from offline_ic.workflows.browse import Listed

PATH_HELP = (
    "PATH is a guest path: /etc/os-release (the Linux root), C:\\Windows\\... (the Windows "
    "volume) or N:/path (volume N as `ls IMAGE` numbers them)."
)


def _json_text(text: str) -> str:
    """A name for JSON output: lone surrogates (undecodable bytes) escaped, the rest as is."""
    return "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) < 0xE000 else c for c in text)


def _stdout_writer() -> Callable[[bytes], object]:
    """Bytes to stdout; a text stream without a byte layer (a caller's StringIO) gets them
    decoded as UTF-8, undecodable bytes kept as surrogate escapes."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        return buffer.write
    return lambda data: sys.stdout.write(data.decode("utf-8", "surrogateescape"))


def _time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _long_line(item: Listed, name: str) -> str:
    st = item.stat
    mode = stat.filemode(st.mode)
    if st.kind == "reparse":
        mode = "l" + mode[1:]
    size = f"{st.rdev[0]}, {st.rdev[1]}" if st.rdev else str(st.size)
    owner = "-" if st.uid is None else str(st.uid)
    group = "-" if st.gid is None else str(st.gid)
    line = f"{mode} {st.nlink:>3} {owner:>5} {group:>5} {size:>12} {_time(st.mtime_ns)} {name}"
    if st.target is not None:
        line += f" -> {terminal(st.target)}"
    if st.attributes:
        line += f"  [{','.join(st.attributes)}]"
    return line


def _render_volumes(image: str, volumes: list[Volume], as_json: bool) -> None:
    from offline_ic.workflows.browse import volume_label

    if as_json:
        emit_json(
            {
                "image": image,
                "volumes": [{**v.to_dict(), "label": volume_label(v)} for v in volumes],
            }
        )
        return
    for v in volumes:
        size = f"{v.size / (1 << 20):.0f} MiB"
        name = f" {terminal(v.name)}" if v.name else ""
        click.echo(f"{v.number}:  {v.filesystem or '-':<9} {size:>11}  {v.type}{name}")


def _render_listing(
    image: str,
    path: str,
    prefix: str,
    items: list[Listed],
    *,
    long: bool,
    recursive: bool,
    as_json: bool,
) -> None:
    if as_json:
        emit_json(
            {
                "image": image,
                "path": path,
                "entries": [
                    {
                        **it.to_dict(),
                        "path": _json_text(prefix + it.path),
                        "name": _json_text(it.stat.name),
                        "target": None if it.stat.target is None else _json_text(it.stat.target),
                    }
                    for it in items
                ],
            }
        )
        return
    for it in items:
        name = terminal(prefix + it.path if recursive else it.stat.name)
        click.echo(_long_line(it, name) if long else name)


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""

    @group.command("ls")
    @click.argument("image", type=click.Path(exists=True))
    @click.argument("path", required=False)
    @click.option("-l", "long", is_flag=True, help="Mode, links, owner, size, mtime (UTC).")
    @click.option(
        "-R", "--recursive", is_flag=True, help="Everything below PATH (links not followed)."
    )
    @parent_option
    @json_option
    def ls(
        image: str, path: str | None, long: bool, recursive: bool, parent: str | None, as_json: bool
    ) -> None:
        """List the volumes of IMAGE, or the directory PATH inside it (read-only).

        PATH is a guest path: /etc (the Linux root), C:\\Windows (the Windows volume)
        or N:/path (volume N as `ls IMAGE` numbers them). NTFS alternate data streams are
        listed as FILE:STREAM; symlinks, reparse points and device files are shown, never
        followed.

        \b
        Examples:
          offline-ic ls win10.vhdx
          offline-ic ls win10.vhdx 'C:\\Windows\\System32\\config' -l
          offline-ic ls debian.vhdx /etc --recursive --json
        """
        from offline_ic.workflows.browse import list_path, open_browser

        browser = open_browser(image, parent=parent)
        with browser.image:
            if path is None:
                _render_volumes(image, browser.volumes, as_json)
                return
            tree, inner, prefix = browser.locate(path)
            items = list_path(tree, inner, recursive=recursive, warn=warn)
            _render_listing(
                image, path, prefix, items, long=long, recursive=recursive, as_json=as_json
            )

    @group.command("cat")
    @click.argument("image", type=click.Path(exists=True))
    @click.argument("path")
    @parent_option
    def cat(image: str, path: str, parent: str | None) -> None:
        """Write the guest file PATH of IMAGE to standard output (read-only).

        PATH is a guest path: /etc/os-release (the Linux root, links followed inside the
        guest), C:\\Windows\\... (the Windows volume), N:/path (volume N), or
        C:\\file:stream for an NTFS alternate data stream.

        \b
        Examples:
          offline-ic cat debian.vhdx /etc/os-release
          offline-ic cat win10.vhdx 'C:\\Windows\\System32\\config\\SOFTWARE' > SOFTWARE
        """
        from offline_ic.workflows.browse import copy_stream, open_browser

        browser = open_browser(image, parent=parent)
        with browser.image:
            tree, inner, _prefix = browser.locate(path)
            with tree.open(inner) as src:
                copy_stream(src, _stdout_writer())
            sys.stdout.flush()

    @group.command("cp")
    @click.argument("image", type=click.Path(exists=True))
    @click.argument("path")
    @click.argument("dest", type=click.Path())
    @click.option("-r", "--recursive", is_flag=True, help="Copy a directory and all below it.")
    @click.option("--force", is_flag=True, help="Replace files that exist in DEST.")
    @parent_option
    @json_option
    def cp(
        image: str,
        path: str,
        dest: str,
        recursive: bool,
        force: bool,
        parent: str | None,
        as_json: bool,
    ) -> None:
        """Copy the guest file or directory PATH of IMAGE to DEST on this machine.

        Into DEST when it is a directory, else as the file DEST. Modification times and
        (Linux) permission bits are kept, set-id bits dropped; symlinks are copied as
        symlinks and never followed; hard links stay hard links; device files, FIFOs,
        sockets and NTFS reparse points are skipped and named. Nothing is written outside
        DEST: a guest name that is '.', '..' or holds '/' is refused, and an existing file
        is replaced only with --force.

        \b
        Examples:
          offline-ic cp win10.vhdx 'C:\\Windows\\System32\\config\\SYSTEM' ./SYSTEM
          offline-ic cp debian.vhdx /etc ./evidence --recursive
        """
        from offline_ic.errors import SafetyRefusal
        from offline_ic.workflows.browse import Copier, open_browser

        browser = open_browser(image, parent=parent)
        with browser.image:
            tree, inner, _prefix = browser.locate(path)
            chain = [i.path for i in browser.image.info().chain()]
            copier = Copier(tree, force=force, protect=(image, *chain))
            try:
                report = copier.copy(inner, dest, recursive)
            finally:
                copier.close()
        for line in report.skipped:
            warn(f"not copied: {line}")
        for line in report.refused:
            warn(f"refused: {line}")
        if as_json:
            emit_json(
                {
                    "image": image,
                    "path": path,
                    "dest": dest,
                    "files": report.files,
                    "directories": report.dirs,
                    "links": report.links,
                    "bytes": report.bytes,
                    "skipped": [_json_text(s) for s in report.skipped],
                    "refused": [_json_text(s) for s in report.refused],
                }
            )
        else:
            click.echo(
                f"copied {report.files} file(s), {report.dirs} director(y/ies), "
                f"{report.links} link(s), {report.bytes} bytes to {dest}"
            )
        if report.refused:
            raise SafetyRefusal(
                f"{len(report.refused)} guest name(s) refused (not plain file names); "
                "the rest was copied"
            )

    @group.command("mount")
    @click.argument("image", type=click.Path(exists=True))
    @click.argument("mountpoint", type=click.Path(exists=True, file_okay=False))
    @click.option(
        "--volume", type=click.IntRange(min=1), metavar="N", help="Only volume N, as the root."
    )
    @click.option("--disk", is_flag=True, help="The virtual disk itself, as the one file disk.raw.")
    @click.option("--foreground", is_flag=True, help="Stay in the foreground; Ctrl-C unmounts.")
    @click.option(
        "--allow-other", is_flag=True, help="Let other users read the mount (FUSE allow_other)."
    )
    @click.option(
        "--page-cache",
        is_flag=True,
        help="Serve files of 512 MiB and more through the page cache too (shared mmap, "
        "fast small reads; big sequential reads slower).",
    )
    @parent_option
    def mount(
        image: str,
        mountpoint: str,
        volume: int | None,
        disk: bool,
        foreground: bool,
        allow_other: bool,
        page_cache: bool,
        parent: str | None,
    ) -> None:
        """Mount IMAGE read-only at MOUNTPOINT through FUSE.

        Every volume with a file system as MOUNTPOINT/<n>-<label>/ (n as `ls IMAGE` numbers
        them), or one volume (--volume N), or the virtual disk as MOUNTPOINT/disk.raw
        (--disk: for mmls, sfdisk -d, fsck -n, ntfs-3g -o ro). Nothing is written; NTFS
        streams appear as FILE:STREAM; device files and set-id bits are inert (nodev,
        nosuid). Files of 512 MiB and more bypass the page cache (fast big reads, no
        shared mmap; --page-cache: as every other file). Unmount with
        `fusermount3 -u MOUNTPOINT`. Without FUSE, use ls/cat/cp.

        \b
        Examples:
          offline-ic mount win10.vhdx /mnt/win10
          offline-ic mount debian.vhdx /mnt/debian --volume 1 --foreground
          offline-ic mount child.avhdx /mnt/disk --disk
        """
        from offline_ic.workflows.browse import open_browser
        from offline_ic.workflows.fusefs import mount, require_fuse

        if volume is not None and disk:
            raise click.UsageError("--volume and --disk exclude each other")
        require_fuse()
        browser = open_browser(image, parent=parent)
        how = "Ctrl-C or " if foreground else ""
        click.echo(
            f"mounting {image} read-only at {mountpoint}; unmount with {how}"
            f"`fusermount3 -u {mountpoint}`"
        )
        sys.stdout.flush()
        with browser.image:
            mount(
                browser,
                mountpoint,
                volume=volume,
                disk=disk,
                foreground=foreground,
                allow_other=allow_other,
                page_cache=page_cache,
            )
        if foreground:
            click.echo(f"unmounted {mountpoint}")

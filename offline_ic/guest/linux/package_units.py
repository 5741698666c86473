"""The systemd units inside a Debian package file (``--package x.deb``), read on the host.

Why: ``fix`` installs a daemons package with the guest's own dpkg inside the appliance, and
then enables the units the way ``systemctl enable`` would; which units the package has, and
what their ``[Install]`` says, is read here from the file itself (an ``ar`` archive holding
``data.tar.{gz,xz,zst}``), so the plan names real paths and never links to a unit the package
does not ship. Pure data reading, bounded: the package is the user's file, but it is read as
untrusted (member sizes capped, only unit files kept).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from typing import BinaryIO, cast

from offline_ic.errors import InputError

UNIT_DIRS_IN_PACKAGE = ("lib/systemd/system", "usr/lib/systemd/system")
MAX_UNIT = 1 << 20
MAX_MEMBERS = 100_000
_AR_MAGIC = b"!<arch>\n"


def deb_units(path: str) -> dict[str, tuple[str, str]]:
    """Unit name -> (guest path, unit file text) of the ``.service`` files in a ``.deb``.

    Raises InputError when the file is not a readable Debian package.
    """
    try:
        with open(path, "rb") as fh:
            data, name = _ar_member(fh, path, "data.tar")
            return _units(_decompressed(data, name, path), path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the package ({exc.strerror or exc})") from exc


def _ar_member(fh: BinaryIO, path: str, prefix: str) -> tuple[BinaryIO, str]:
    """The first ``ar`` member whose name starts with ``prefix``, as a bounded file object."""
    if fh.read(8) != _AR_MAGIC:
        raise InputError(f"{path}: not a Debian package (no ar archive signature)")
    while True:
        header = fh.read(60)
        if len(header) < 60:
            raise InputError(f"{path}: not a Debian package (no {prefix}.* member)")
        name = header[:16].rstrip(b" ").rstrip(b"/").decode("ascii", "replace")
        try:
            size = int(header[48:58].strip() or b"0")
        except ValueError:
            raise InputError(f"{path}: damaged ar member header") from None
        if name.startswith(prefix):
            return io.BufferedReader(_Bounded(fh, size)), name
        fh.seek(size + (size & 1), io.SEEK_CUR)


def _decompressed(raw: BinaryIO, name: str, path: str) -> BinaryIO:
    if name.endswith(".zst"):
        import zstandard

        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(raw))
    if name.endswith((".xz", ".gz", ".tar", ".bz2")):
        return raw  # tarfile's stream mode decompresses these itself
    raise InputError(f"{path}: {name}: compression not supported")


def _units(stream: BinaryIO, path: str) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for count, member in enumerate(tar):
                if count > MAX_MEMBERS:
                    break
                name = posixpath.normpath(member.name.lstrip("./") or ".")
                folder, unit = posixpath.split(name)
                if folder not in UNIT_DIRS_IN_PACKAGE or not unit.endswith(".service"):
                    continue
                if member.issym():
                    text = ""
                elif member.isfile() and member.size <= MAX_UNIT:
                    fh = tar.extractfile(member)
                    text = fh.read(MAX_UNIT).decode("utf-8", "replace") if fh else ""
                else:
                    continue
                out.setdefault(unit, (f"/{name}", text))
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: damaged package data ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - zstandard's and lzma's own errors
        raise InputError(f"{path}: damaged package data ({type(exc).__name__}: {exc})") from exc
    return out


class _Bounded(io.RawIOBase):
    """At most ``size`` bytes of ``fh`` from where it stands (one ar member)."""

    def __init__(self, fh: BinaryIO, size: int):
        self.fh, self.left = fh, size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # noqa: ANN001 - a writable buffer
        want = min(len(buf), self.left)
        data = self.fh.read(want) if want > 0 else b""
        buf[: len(data)] = data
        self.left -= len(data)
        return len(data)

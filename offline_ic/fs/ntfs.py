"""NTFS volumes, read through dissect.ntfs: find a file, open it, and the facts that gate writing.

The in-place writer (a later layer) needs to know where a file's bytes are on disk and
whether writing them is safe; the read path needs only ``open``. Both start here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from offline_ic.errors import CorruptImageError, NotFoundError

# $VOLUME_INFORMATION flags (the volume's "dirty" bit makes chkdsk run at next boot).
VOLUME_IS_DIRTY = 0x0001
# $STANDARD_INFORMATION / file attribute flags that make in-place writing unsafe.
FILE_ATTRIBUTE_SPARSE = 0x0200
FILE_ATTRIBUTE_COMPRESSED = 0x0800
FILE_ATTRIBUTE_ENCRYPTED = 0x4000
# Non-resident attribute header flags.
ATTR_FLAG_COMPRESSED = 0x0001
ATTR_FLAG_ENCRYPTED = 0x4000
ATTR_FLAG_SPARSE = 0x8000

HIBERNATION_SIGNATURES = (b"hibr", b"HIBR", b"wake", b"WAKE", b"RSTR", b"rstr")


@dataclass(frozen=True)
class NtfsFileInfo:
    """Where a file's unnamed $DATA lives and how: what the in-place writer must know."""

    path: str
    size: int
    resident: bool
    compressed: bool
    encrypted: bool
    sparse: bool
    runs: tuple[tuple[int | None, int], ...]  # (first cluster or None for a hole, cluster count)


class NtfsVolume:
    """A read-only NTFS volume over a file object (a ``Volume.stream()`` of our image layer)."""

    def __init__(self, fh: BinaryIO, name: str = "NTFS volume"):
        from dissect.ntfs import NTFS
        from dissect.ntfs.exceptions import Error as NtfsError

        self.name = name
        try:
            self._fs = NTFS(fh)
        except (NtfsError, EOFError, ValueError, struct.error) as exc:
            raise CorruptImageError(f"{name}: not a readable NTFS volume ({exc})") from exc

    @property
    def cluster_size(self) -> int:
        return self._fs.cluster_size

    def _record(self, path: str):
        from dissect.ntfs.exceptions import Error as NtfsError

        try:
            return self._fs.mft.get(path.replace("\\", "/").strip("/"))
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.name}: {path} not found") from exc
        except (NtfsError, EOFError, ValueError, struct.error) as exc:
            raise CorruptImageError(f"{self.name}: cannot read {path} ({exc})") from exc

    def exists(self, path: str) -> bool:
        """True when ``path`` (case-insensitive, / or \\ separated) names a file or directory."""
        try:
            self._record(path)
        except NotFoundError:
            return False
        return True

    def open(self, path: str) -> BinaryIO:
        """A seekable read-only stream of the file's unnamed $DATA."""
        record = self._record(path)
        if record.is_dir():
            raise NotFoundError(f"{self.name}: {path} is a directory")
        return record.open()

    def read_head(self, path: str, length: int) -> bytes:
        """The first ``length`` bytes of a file (fewer if it is shorter)."""
        with self.open(path) as fh:
            return fh.read(length)

    def file_info(self, path: str) -> NtfsFileInfo:
        """Residency, compression/encryption/sparse flags and data runs of ``path``."""
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        record = self._record(path)
        data_attrs = [a for a in record.attributes[ATTRIBUTE_TYPE_CODE.DATA] if not a.name]
        if not data_attrs:
            raise NotFoundError(f"{self.name}: {path} has no data stream")
        first = data_attrs[0]
        flags = first.header.flags
        runs: list[tuple[int | None, int]] = []
        if not first.resident:
            for attr in data_attrs:
                runs.extend(attr.dataruns())
        return NtfsFileInfo(
            path=path,
            size=record.size(),
            resident=bool(first.resident),
            compressed=bool(flags & ATTR_FLAG_COMPRESSED),
            encrypted=bool(flags & ATTR_FLAG_ENCRYPTED),
            sparse=bool(flags & ATTR_FLAG_SPARSE),
            runs=tuple(runs),
        )

    def is_dirty(self) -> bool:
        """The $Volume dirty flag (set while mounted, and after an unclean shutdown)."""
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        record = self._record("$Volume")
        for attr in record.attributes[ATTRIBUTE_TYPE_CODE.VOLUME_INFORMATION]:
            data = attr.data()
            if len(data) >= 12:
                (flags,) = struct.unpack_from("<H", data, 10)
                return bool(flags & VOLUME_IS_DIRTY)
        raise CorruptImageError(f"{self.name}: $Volume has no volume information")

    def hibernation_signature(self) -> str | None:
        """The hiberfil.sys signature when Windows hibernated (or Fast-Startup-suspended), else None.

        A hibernated volume's state lives in memory-image form: writing it corrupts the
        resume, so writers refuse. An empty or zeroed hiberfil.sys means no resume pending.
        """
        try:
            head = self.read_head("hiberfil.sys", 4)
        except NotFoundError:
            return None
        return head.decode("ascii") if head in HIBERNATION_SIGNATURES else None

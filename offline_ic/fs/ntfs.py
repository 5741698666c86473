"""NTFS volumes, read through dissect.ntfs: find a file, open it, and the facts that gate writing.

The in-place writer (a later layer) needs to know where a file's bytes are on disk and
whether writing them is safe; the read path needs only ``open``. Both start here.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from offline_ic.errors import (
    CorruptImageError,
    InputError,
    NotFoundError,
    SafetyRefusal,
    parsing,
)
from offline_ic.fs.guarded import GuardedStream

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
COMPRESSION_UNIT_CLUSTERS = 16  # a compressed stream is mapped in units of 16 clusters

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
        with parsing(f"{name}: not a readable NTFS volume", extra=(NtfsError,)):
            self.size = fh.seek(0, io.SEEK_END)
            fh.seek(0)
            self._fs = NTFS(fh)

    @property
    def cluster_size(self) -> int:
        return self._fs.cluster_size

    def _record(self, path: str):
        """The MFT record of ``path``, walked one name at a time from the root. A symbolic
        link or junction on the way is refused, not followed: dissect's own walk follows
        them without a limit (a link naming itself never ends, one naming a path below
        itself recurses until Python gives up). A link at the end is returned as itself."""
        from dissect.ntfs.exceptions import Error as NtfsError
        from dissect.ntfs.exceptions import FileNotFoundError as NtfsMissing
        from dissect.ntfs.exceptions import NotADirectoryError as NtfsNotDir

        parts = [p for p in path.replace("\\", "/").split("/") if p]
        with parsing(f"{self.name}: cannot read the MFT record of {path}", extra=(NtfsError,)):
            record = self._fs.mft.root
            for depth, part in enumerate(parts):
                if record.is_symlink() or record.is_mount_point():
                    raise InputError(
                        f"{self.name}: cannot read {path}: {'/'.join(parts[:depth])} is a "
                        f"symbolic link or junction ({_link_target(record)}): not followed"
                    )
                try:  # dissect's errors are NtfsErrors too: test them first
                    record = record.get(part)
                except (NtfsMissing, NtfsNotDir) as exc:
                    raise NotFoundError(f"{self.name}: {path} not found") from exc
            return record

    def exists(self, path: str) -> bool:
        """True when ``path`` (case-insensitive, / or \\ separated) names a file or directory."""
        try:
            self._record(path)
        except NotFoundError:
            return False
        return True

    def open(self, path: str) -> BinaryIO:
        """A seekable read-only stream of the file's unnamed $DATA."""
        from dissect.ntfs.exceptions import Error as NtfsError

        record = self._record(path)
        what = f"{self.name}: cannot read {path} (its MFT record or data runs)"
        with parsing(what, extra=(NtfsError,)):
            if record.is_dir():
                raise NotFoundError(f"{self.name}: {path} is a directory")
            size = record.size()
            if size > self.size:  # a damaged size would have us read zeros for ever
                raise CorruptImageError(
                    f"{self.name}: {path} claims {size} bytes, more than the volume holds "
                    f"({self.size}): damaged MFT record"
                )
            mapped = self._run_bytes(record)
            if mapped > self.size + COMPRESSION_UNIT_CLUSTERS * self.cluster_size:
                raise CorruptImageError(
                    f"{self.name}: {path}: its data runs map {mapped} bytes, more than the "
                    f"volume holds ({self.size}): damaged MFT record"
                )
            inner = record.open()
        return cast(BinaryIO, GuardedStream(inner, what, (NtfsError,)))

    def _run_bytes(self, record: Any) -> int:
        """The bytes the unnamed $DATA's runs map, sparse runs included. dissect walks a
        compressed stream's runs 16 clusters at a time when it opens it: runs claiming 2^40
        clusters held the open for ever (the ntfs_hive fuzz target's finding)."""
        runs = [n for a in _unnamed_data(record) if not a.resident for _lcn, n in a.dataruns()]
        return sum(runs) * self.cluster_size

    def read_head(self, path: str, length: int) -> bytes:
        """The first ``length`` bytes of a file (fewer if it is shorter)."""
        with self.open(path) as fh:
            return fh.read(length)

    def file_info(self, path: str) -> NtfsFileInfo:
        """Residency, compression/encryption/sparse flags and data runs of ``path``."""
        from dissect.ntfs.exceptions import Error as NtfsError

        record = self._record(path)
        with parsing(f"{self.name}: cannot read the data runs of {path}", extra=(NtfsError,)):
            return self._file_info(path, record)

    def _file_info(self, path: str, record: Any) -> NtfsFileInfo:
        data_attrs = _unnamed_data(record)
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
        from dissect.ntfs.exceptions import Error as NtfsError

        record = self._record("$Volume")
        with parsing(f"{self.name}: cannot read $Volume", extra=(NtfsError,)):
            datas = [a.data() for a in record.attributes[ATTRIBUTE_TYPE_CODE.VOLUME_INFORMATION]]
        for data in datas:
            if len(data) >= 12:
                (flags,) = struct.unpack_from("<H", data, 10)
                return bool(flags & VOLUME_IS_DIRTY)
        raise CorruptImageError(f"{self.name}: $Volume has no volume information")

    def hibernation_signature(self) -> str | None:
        """The hiberfil.sys signature when Windows hibernated (or Fast-Startup-suspended), or
        None.

        A hibernated volume's state lives in memory-image form: writing it corrupts the
        resume, so writers refuse. An empty or zeroed hiberfil.sys means no resume pending.
        """
        try:
            head = self.read_head("hiberfil.sys", 4)
        except NotFoundError:
            return None
        return head.decode("ascii") if head in HIBERNATION_SIGNATURES else None


def _unnamed_data(record: Any) -> list[Any]:
    """The attributes of a record's unnamed $DATA (the file's bytes; named ones are
    alternate data streams), in the order their runs follow one another."""
    from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

    return [a for a in record.attributes[ATTRIBUTE_TYPE_CODE.DATA] if not a.name]


def _link_target(record: Any) -> str:
    """What a link says it points to (its print name), for the refusal's message."""
    from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

    attr = record.attributes[ATTRIBUTE_TYPE_CODE.REPARSE_POINT]
    try:
        return f"to {attr.print_name or attr.substitute_name}"
    except Exception:  # a damaged reparse buffer has no names
        return f"reparse tag 0x{int(attr.tag):08x}"


def map_file_writes(
    info: NtfsFileInfo, cluster_size: int, writes: list[tuple[int, bytes]]
) -> list[tuple[int, bytes]]:
    """Turn writes at file offsets into writes at volume offsets, through the data runs.

    Only the content of an existing, plain, non-resident file is written: no NTFS metadata
    changes, so the volume stays consistent whatever the journal ($LogFile) holds. A write
    that would need any other kind of change is refused.
    """
    if info.resident:
        raise SafetyRefusal(
            f"{info.path}: data is resident in the MFT record; not written in place"
        )
    for flag, what in (
        (info.compressed, "compressed"),
        (info.encrypted, "encrypted"),
        (info.sparse, "sparse"),
    ):
        if flag:
            raise SafetyRefusal(f"{info.path}: file is {what}; not written in place")
    out: list[tuple[int, bytes]] = []
    for file_offset, data in writes:
        if file_offset < 0 or file_offset + len(data) > info.size:
            raise SafetyRefusal(
                f"{info.path}: write at {file_offset}+{len(data)} goes past the end of the file "
                f"({info.size} bytes); files are not grown in place"
            )
        pos, view = file_offset, memoryview(data)
        while view:
            volume_offset, room = _locate(info, cluster_size, pos)
            n = min(room, len(view))
            out.append((volume_offset, bytes(view[:n])))
            pos += n
            view = view[n:]
    return out


def _locate(info: NtfsFileInfo, cluster_size: int, file_offset: int) -> tuple[int, int]:
    """(volume offset of ``file_offset``, bytes left in its run)."""
    vcn, within = divmod(file_offset, cluster_size)
    run_start = 0
    for lcn, count in info.runs:
        if vcn < run_start + count:
            if lcn is None:
                raise SafetyRefusal(f"{info.path}: offset {file_offset} is in a sparse hole")
            offset = (lcn + vcn - run_start) * cluster_size + within
            return offset, (run_start + count - vcn) * cluster_size - within
        run_start += count
    raise CorruptImageError(f"{info.path}: data runs end before offset {file_offset}")


def file_extents(info: NtfsFileInfo, cluster_size: int) -> list[tuple[int, int]]:
    """The whole content of a plain non-resident file as (volume offset, length) extents,
    in file order, through its data runs: for reading the file back through another
    reader of the disk (the read-back after a write) without parsing NTFS again."""
    if info.resident or info.compressed or info.encrypted or info.sparse:
        raise SafetyRefusal(f"{info.path}: not a plain non-resident file; not read by its runs")
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < info.size:
        volume_offset, room = _locate(info, cluster_size, pos)
        n = min(room, info.size - pos)
        out.append((volume_offset, n))
        pos += n
    return out


def check_volume_writable(volume: NtfsVolume) -> None:
    """Refuse to write a volume Windows would not see consistently at next boot."""
    signature = volume.hibernation_signature()
    if signature:
        raise SafetyRefusal(
            f"{volume.name}: Windows is hibernated or Fast-Startup-suspended (hiberfil.sys starts "
            f"with '{signature}'); boot it and shut it down fully (shutdown /s /f /t 0), or turn "
            "Fast Startup off, before servicing offline"
        )
    if volume.is_dirty():
        raise SafetyRefusal(f"{volume.name}: NTFS volume is marked dirty; run chkdsk first")

"""One file of a FAT volume (an EFI system partition's BCD store), read with dissect.fat within
a bound.

dissect.fat follows a cluster chain until its end-of-chain mark and lists the whole chain
before the first byte is read. A chain that loops (a damaged or hostile FAT: the last
cluster of a file or folder pointing back into it) never ends, and the list grows until
memory runs out: on a looped ``\\EFI\\Microsoft\\Boot\\BCD`` chain, ``check --profile golden``
held 1 GiB after 20 s and never finished. Here chains are followed by our own walk of
dissect's FAT entries, cut after the clusters that ``limit`` bytes need, so a loop is one
error, found in time proportional to ``limit``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from offline_ic.errors import CorruptImageError, InputError, OfflineICError


def read_fat_file(stream: BinaryIO, path: str, *, where: str, limit: int) -> bytes | None:
    """The bytes of ``path`` (folders separated by "/") on the FAT volume ``stream``; None
    when there is no such file. InputError: ``path`` is a folder or larger than ``limit``
    bytes; CorruptImageError: the FAT cannot be read, or a cluster chain is longer than
    ``limit`` bytes need (it loops)."""
    from dissect.fat.fat import FATFS

    read_directories_as_vfat()
    try:
        fs = FATFS(stream)
        bound_chains(fs, where, limit // fs.cluster_size + 1)
        try:
            entry = fs.get(path)
        except (FileNotFoundError, NotADirectoryError):  # dissect.fat's are subclasses
            return None
        if entry.is_directory():
            raise InputError(f"{where}: {path} is a folder, not a file")
        if entry.size > limit:
            raise InputError(f"{where}: {path} is larger than {limit} bytes; not read")
        data: bytes = entry.open().read(limit)
        return data
    except OfflineICError:
        raise
    except Exception as exc:  # noqa: BLE001 - dissect.fat's errors have no common base with
        # the parser errors it lets through (struct, EOF, value, index errors)
        raise CorruptImageError(f"{where}: FAT unreadable ({type(exc).__name__}: {exc})") from None


def bound_chains(fatfs: Any, where: str, most: int | None = None) -> None:
    """Make every cluster chain of dissect.fat's ``fatfs`` end within ``most`` clusters, by
    default the entries its FAT holds (a chain longer than that repeats a cluster: it loops).
    dissect lists a chain to its end mark before reading a byte: a chain that loops grew
    without end (7.5 GB in 60 s for `cat` of a file on an ESP)."""
    fat = fatfs.fat
    fat.chain = _bounded_chain(fat, fat.entry_count if most is None else most, where)


def _bounded_chain(fat: Any, most: int, where: str) -> Callable[[int], Iterator[int]]:
    """A replacement for dissect's ``FAT.chain`` (same entry values, same end marks) that
    takes at most ``most`` steps. Counting what dissect yields is not enough: an entry that
    is neither data, end, bad nor free (1, or a reserved value) sends dissect's loop to that
    cluster without yielding, and an entry of 1 at cluster 1 spins there for ever (the esp
    fuzz target's finding)."""
    from dissect.fat.c_fat import (
        DATA_CLUSTER_MAX,
        DATA_CLUSTER_MIN,
        END_OF_CLUSTER_MAX,
        END_OF_CLUSTER_MIN,
        FAT12_EOC,
    )

    bits = fat.bits_per_entry
    top = (1 << bits) - 1
    data_max, end_min, end_max = (
        DATA_CLUSTER_MAX & top,
        END_OF_CLUSTER_MIN & top,
        END_OF_CLUSTER_MAX & top,
    )

    def chain(cluster: int) -> Iterator[int]:
        start = cluster
        if cluster < DATA_CLUSTER_MIN:  # 0 is an empty file's (dissect reads none), 1 none's
            raise CorruptImageError(
                f"{where}: a cluster chain starts at cluster {cluster}, before the first data "
                f"cluster ({DATA_CLUSTER_MIN}); not read"
            )
        for _ in range(most):
            value = fat.get(cluster)
            if DATA_CLUSTER_MIN <= value <= data_max:
                yield cluster
                cluster = value
                continue
            if end_min <= value <= end_max or (bits == 12 and value == FAT12_EOC):
                yield cluster
                return
            raise CorruptImageError(
                f"{where}: the FAT entry of cluster {cluster} is {value:#x} (free, bad or "
                f"reserved) in the chain starting at cluster {start}; not read"
            )
        raise CorruptImageError(
            f"{where}: the FAT cluster chain starting at cluster {start} is longer than "
            f"{most} clusters (it loops, or the file is too large); not read"
        )

    return chain


_LISTED: dict[str, Any] = {}  # dissect.fat's own directory reader, once replaced
NT_LOWER_BASE, NT_LOWER_EXT = 0x08, 0x10  # DIR_NTRes: the short name's case, as Windows wrote it


def read_directories_as_vfat() -> None:
    """Make dissect.fat read directories as Windows and Linux's vfat do (installed once, on
    dissect's module: its directories and lookups read their entries through it):

    * the volume label entry is skipped: dissect listed it as an empty file (``ls`` of an
      ESP showed its label, ``cp -r`` made a file of it). vfat skips every entry with the
      volume bit that is not part of a long name, and dissect has joined those already;
    * a short name without a long one is shown in the case its NT flags record: Windows
      and mtools write ``grub.cfg`` or ``deep`` as a short name and these flags, and
      dissect showed ``GRUB.CFG`` and ``DEEP``. Lookups stay case-blind, as on FAT."""
    from dissect.fat import fat

    if "entries" in _LISTED:
        return
    unfiltered = _LISTED["entries"] = fat._iter_dirent  # noqa: SLF001 - dissect has no hook

    def entries(fs: Any, fh: BinaryIO, parent: Any = None) -> Iterator[Any]:
        for entry in unfiltered(fs, fh, parent):
            if entry.is_volume_id():
                continue
            flags = entry.dirent.DIR_NTRes
            if not entry.ldirents and flags & (NT_LOWER_BASE | NT_LOWER_EXT):
                base, dot, ext = entry.name.partition(".")
                base = base.lower() if flags & NT_LOWER_BASE else base
                ext = ext.lower() if flags & NT_LOWER_EXT else ext
                entry.name = entry.short_name = base + dot + ext
            yield entry

    fat._iter_dirent = entries  # noqa: SLF001

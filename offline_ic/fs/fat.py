"""One file of a FAT volume (an EFI system partition's BCD store), read with dissect.fat within
a bound.

dissect.fat follows a cluster chain until its end-of-chain mark and lists the whole chain
before the first byte is read. A chain that loops (a damaged or hostile FAT: the last
cluster of a file or folder pointing back into it) never ends, and the list grows until
memory runs out: on a looped ``\\EFI\\Microsoft\\Boot\\BCD`` chain, ``check --profile golden``
held 1 GiB after 20 s and never finished. Here every chain is cut after the clusters that
``limit`` bytes need, so a loop is one error, found in time proportional to ``limit``.
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

    try:
        fs = FATFS(stream)
        fs.fat.chain = _bounded(fs.fat.chain, limit // fs.cluster_size + 1, where)
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


def _bounded(
    chain: Callable[[int], Iterator[int]], most: int, where: str
) -> Callable[[int], Iterator[Any]]:
    """``chain`` (dissect's FAT.chain) cut after ``most`` clusters, with an error."""

    def bounded(cluster: int) -> Iterator[int]:
        for count, next_cluster in enumerate(chain(cluster), 1):
            if count > most:
                raise CorruptImageError(
                    f"{where}: the FAT cluster chain starting at cluster {cluster} is longer "
                    f"than {most} clusters (it loops, or the file is too large); not read"
                )
            yield next_cluster

    return bounded

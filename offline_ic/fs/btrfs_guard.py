"""dissect.btrfs held to the invariants the kernel checks before it uses a btrfs structure.

dissect.btrfs trusts what the volume says, and the btrfs fuzz target found what that costs:

* Tree nodes (``Cursor.push``): a node holding no items made ``Cursor.search``'s binary
  search spin for ever (its bounds start at 0 and -1), and a key pointer back to the node
  itself, or to any node no lower in the tree, made the descent endless. The kernel's
  tree-checker (fs/btrfs/tree-checker.c) refuses them: a child's level is its parent's minus
  one, levels stay below BTRFS_MAX_LEVEL, a node holds one item at least and no more than
  fit in it. With levels strictly falling, a descent is at most eight nodes deep.
* The superblock's sizes: a node size of 256 MiB or 4 GiB had every node read at that
  size (16 s and 8 GB of memory for one open). The kernel (``btrfs_validate_super``) takes
  a sector size and a node size that are powers of two from 4 KiB to 64 KiB, the node no
  smaller than the sector, and a system chunk array of at most 2,048 bytes.
* Chunks (``ChunkStream.add``; found reading dissect's chunk stream after the node size):
  a striped chunk's reads are cut into stripe-length pieces, one turn of a Python loop
  each, so a stripe length of 1 byte makes a 4 MiB file read four million turns. The
  kernel (``btrfs_check_chunk_valid``) takes only a 64 KiB stripe length, at least one
  stripe, a length and a start that are whole sectors, a type that is data, system or
  metadata, and at most one RAID profile.

dissect offers no hook: the two methods are wrapped on its classes, once, when the first
btrfs volume is opened; the superblock is read and checked before dissect sees it.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from offline_ic.errors import CorruptImageError

MAX_LEVEL = 8  # BTRFS_MAX_LEVEL: levels 0 (leaves) to 7
SUPERBLOCK_AT = 0x10000  # BTRFS_SUPER_INFO_OFFSET
MIN_SECTOR, MAX_BLOCK = 4096, 65536  # BTRFS_MAX_METADATA_BLOCKSIZE
MAX_SYS_CHUNK_ARRAY = 2048  # BTRFS_SYSTEM_CHUNK_ARRAY_SIZE
STRIPE_LEN = 65536  # BTRFS_STRIPE_LEN
_UNCHECKED: dict[str, Any] = {}  # dissect's own methods, once replaced


def guard_btrfs() -> None:
    """Install the checks on dissect.btrfs's cursor and chunk stream (idempotent)."""
    from dissect.btrfs import stream, tree

    if "push" in _UNCHECKED:
        return
    unchecked_push = _UNCHECKED["push"] = tree.Cursor.push
    unchecked_add = _UNCHECKED["add"] = stream.ChunkStream.add

    def push(self: Any, address: int, initial_index: int = 0) -> None:
        parent = self._header
        if len(self._path) >= MAX_LEVEL:
            raise CorruptImageError(f"btrfs: tree deeper than {MAX_LEVEL} levels at {address:#x}")
        unchecked_push(self, address, initial_index)
        _check_node(self._header, parent, address, self.btree.btrfs.node_size)

    def add(self: Any, offset: int, chunk: Any) -> None:
        _check_chunk(offset, chunk, self.btrfs.sector_size)
        unchecked_add(self, offset, chunk)

    tree.Cursor.push = push
    stream.ChunkStream.add = add


def check_btrfs_superblock(fh: BinaryIO, name: str) -> None:
    """Refuse a superblock whose sizes no btrfs has, before dissect reads by them (one
    without the btrfs magic is dissect's to refuse)."""
    from dissect.btrfs.c_btrfs import c_btrfs

    fh.seek(SUPERBLOCK_AT)
    raw = fh.read(len(c_btrfs.btrfs_super_block))
    if len(raw) < len(c_btrfs.btrfs_super_block):
        return
    sb = c_btrfs.btrfs_super_block(raw)
    if sb.magic != c_btrfs.BTRFS_MAGIC:
        return
    sector, node = sb.sectorsize, sb.nodesize
    if not _power_of_two_within(sector, MIN_SECTOR, MAX_BLOCK):
        raise CorruptImageError(
            f"{name}: btrfs superblock with sector size {sector} (a power of two from "
            f"{MIN_SECTOR} to {MAX_BLOCK} in a real one)"
        )
    if not _power_of_two_within(node, sector, MAX_BLOCK):
        raise CorruptImageError(
            f"{name}: btrfs superblock with node size {node} (a power of two from the "
            f"sector size, {sector}, to {MAX_BLOCK} in a real one)"
        )
    if sb.sys_chunk_array_size > MAX_SYS_CHUNK_ARRAY:
        raise CorruptImageError(
            f"{name}: btrfs superblock with a system chunk array of "
            f"{sb.sys_chunk_array_size} bytes (at most {MAX_SYS_CHUNK_ARRAY})"
        )


def _power_of_two_within(value: int, low: int, high: int) -> bool:
    return low <= value <= high and value & (value - 1) == 0


def _check_node(header: Any, parent: Any, address: int, node_size: int) -> None:
    from dissect.btrfs.c_btrfs import c_btrfs

    level, count = header.level, header.nritems
    if level >= MAX_LEVEL:
        raise CorruptImageError(f"btrfs: tree node at {address:#x} claims level {level}")
    if parent is not None and level != parent.level - 1:
        raise CorruptImageError(
            f"btrfs: tree node at {address:#x} has level {level} under a node of level "
            f"{parent.level}: the tree loops or is damaged"
        )
    entry = len(c_btrfs.btrfs_key_ptr) if level else len(c_btrfs.btrfs_item)
    fit = (node_size - len(c_btrfs.btrfs_header)) // entry
    if not 1 <= count <= fit:
        raise CorruptImageError(
            f"btrfs: tree node at {address:#x} claims {count} items (1 to {fit} fit in it)"
        )


def _check_chunk(offset: int, chunk: Any, sector: int) -> None:
    from dissect.btrfs.c_btrfs import BTRFS_BLOCK_GROUP_PROFILE_MASK, BTRFS_BLOCK_GROUP_TYPE_MASK

    where = f"btrfs: chunk at {offset:#x}"
    kind, profile = int(BTRFS_BLOCK_GROUP_TYPE_MASK), int(BTRFS_BLOCK_GROUP_PROFILE_MASK)
    chunk_type = int(chunk.type)
    if chunk.stripe_len != STRIPE_LEN:
        raise CorruptImageError(
            f"{where} has a stripe length of {chunk.stripe_len} ({STRIPE_LEN} in a real one)"
        )
    if chunk.num_stripes < 1:
        raise CorruptImageError(f"{where} has no stripe")
    if chunk.length < 1 or chunk.length % sector or offset % sector:
        raise CorruptImageError(
            f"{where} of {chunk.length} bytes is not whole {sector}-byte sectors"
        )
    if chunk_type & ~(kind | profile) or not chunk_type & kind:
        raise CorruptImageError(f"{where} has type {chunk_type:#x}: no real chunk has it")
    raid = chunk_type & profile
    if raid & (raid - 1):
        raise CorruptImageError(f"{where} claims several RAID profiles ({raid:#x})")

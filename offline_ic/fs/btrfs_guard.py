"""dissect.btrfs's B-tree cursor held to the invariants the kernel's tree-checker enforces.

dissect.btrfs walks a tree by pushing its cursor from a node to the child a key pointer
names, and trusts each node's header: a node holding no items made ``Cursor.search``'s
binary search spin for ever (its bounds start at 0 and -1), and a key pointer back to the
node itself, or to any node no lower in the tree, made the descent endless (the btrfs fuzz
target found both in its first minute). The kernel refuses such nodes before it uses them
(fs/btrfs/tree-checker.c): a child's level is its parent's minus one, levels stay below
BTRFS_MAX_LEVEL, and a node holds at least one item and no more than fit in it.

Every node dissect.btrfs enters goes through ``Cursor.push``, so the checks are made there,
once per push, by wrapping that one method (dissect offers no hook; installed once, when
the first btrfs volume is opened). With levels strictly decreasing, a descent is at most
eight nodes deep whatever the volume says.
"""

from __future__ import annotations

from typing import Any

from offline_ic.errors import CorruptImageError

MAX_LEVEL = 8  # BTRFS_MAX_LEVEL: levels 0 (leaves) to 7
_UNCHECKED: dict[str, Any] = {}  # dissect's own methods, once replaced


def guard_btrfs_cursor() -> None:
    """Install the checks on dissect.btrfs's cursor (idempotent)."""
    from dissect.btrfs import tree

    if "push" in _UNCHECKED:
        return
    unchecked = _UNCHECKED["push"] = tree.Cursor.push

    def push(self: Any, address: int, initial_index: int = 0) -> None:
        parent = self._header
        if len(self._path) >= MAX_LEVEL:
            raise CorruptImageError(f"btrfs: tree deeper than {MAX_LEVEL} levels at {address:#x}")
        unchecked(self, address, initial_index)
        _check_node(self._header, parent, address, self.btree.btrfs.node_size)

    tree.Cursor.push = push


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

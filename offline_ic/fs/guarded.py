"""A third-party reader's file object whose read and seek errors are ours.

Why: dissect opens a file at once but reads its data runs, clusters or extents only when
the bytes are asked for, so a damaged file fails in ``read``, in the caller's copy loop
(``cat``, ``cp``, a FUSE read), far from any error boundary: a 5-byte FAT file with a
two-cluster chain made dissect seek before the data area, a ValueError traceback from
``cat`` (the fat fuzz target's finding).
"""

from __future__ import annotations

import io
from typing import Any

from offline_ic.errors import parsing
from offline_ic.image.base import SeekableReader


class GuardedStream(SeekableReader):
    """A parser's file object whose reads and seeks raise our CorruptImageError, not the
    parser's IndexError/struct.error: a file's data runs are read lazily, long after open."""

    def __init__(self, inner: Any, what: str, extra: tuple[type[BaseException], ...] = ()):
        self._inner = inner
        self._what = what
        self._extra = extra
        self.size = getattr(inner, "size", None)

    def read(self, n: int | None = -1) -> bytes:
        with parsing(self._what, extra=self._extra):
            return self._inner.read(-1 if n is None else n)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        with parsing(self._what, extra=self._extra):
            return self._inner.seek(pos, whence)

    def tell(self) -> int:
        with parsing(self._what, extra=self._extra):
            return self._inner.tell()

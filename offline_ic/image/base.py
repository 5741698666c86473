"""The contract every disk image format implements.

A ``DiskImage`` is a virtual disk: ``size`` bytes addressed from 0, read with ``read``.
``stream()`` wraps it as a seekable, read-only file object so that dissect.volume,
dissect.ntfs and dissect.target parse exactly the bytes our image layer serves.
Writers extend the same objects (``write_ranges``), so what is written is what is read.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Self


@dataclass
class ImageInfo:
    """Facts about an image for ``inspect``: format, sizes and the parent chain."""

    path: str
    format: str  # "vhdx" | "vhd" | "raw"
    virtual_size: int
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    block_size: int | None = None
    disk_type: str | None = None  # "fixed" | "dynamic" | "differencing" | None for raw
    file_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    parent: ImageInfo | None = None

    def chain(self) -> list[ImageInfo]:
        """This image, then its parent, grandparent, ... (the base disk last)."""
        out: list[ImageInfo] = []
        node: ImageInfo | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "format": self.format,
            "disk_type": self.disk_type,
            "virtual_size": self.virtual_size,
            "logical_sector_size": self.logical_sector_size,
            "physical_sector_size": self.physical_sector_size,
            "block_size": self.block_size,
            "file_size": self.file_size,
        }
        d.update(self.extra)
        d["parent"] = self.parent.to_dict() if self.parent else None
        return d


@dataclass
class WriteSession:
    """What a writable open found and did before the first write (declared, not ad hoc).

    The image object opened writable owns it (``DiskImage.session``); ``recover`` reports
    from it. Formats with more session state (VHDX) extend it.
    """

    rolled_back: bool = False  # an undo journal of an interrupted write was rolled back
    replayed_entries: int | None = None  # VHDX log entries replayed and retired (None: none)


class DiskImage(ABC):
    """A virtual disk of ``size`` bytes. Reads past the end raise; reads of holes give zeros."""

    path: str
    size: int
    format: str = ""  # "vhdx" | "vhd" | "raw"
    parent: DiskImage | None = None  # a differencing disk's parent, opened read-only
    session: WriteSession | None = None  # set by writable opens only

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes of the virtual disk at ``offset``."""

    @abstractmethod
    def info(self) -> ImageInfo:
        """Facts about the image (and its parents)."""

    def close(self) -> None:
        """Release file handles: this image's (``io``) and its parents'. Idempotent."""
        if self.parent is not None:
            self.parent.close()
            self.parent = None
        io = getattr(self, "io", None)
        if io is not None:
            io.close()

    def write_ranges(self, ranges: list[tuple[int, bytes]]) -> None:
        """Write (offset, bytes) ranges as one atomic transaction (writable opens only)."""
        from offline_ic.errors import SafetyRefusal

        raise SafetyRefusal(f"{self.path}: this image cannot be written; nothing written")

    def stream(self) -> ImageStream:
        """A new independent read-only file object over the virtual disk."""
        return ImageStream(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SeekableReader(io.RawIOBase):
    """A seekable read-only raw file object made by its ``read``: ``readinto`` and
    ``readall`` come from it (``io.RawIOBase`` makes ``read`` from ``readinto`` instead)."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class ImageStream(SeekableReader):
    """Seekable read-only file object over a ``DiskImage`` (what dissect parsers are handed)."""

    def __init__(self, image: DiskImage, offset: int = 0, size: int | None = None):
        self._image = image
        self._base = offset
        self._size = image.size - offset if size is None else size
        self._pos = 0

    @property
    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            new = pos
        elif whence == io.SEEK_CUR:
            new = self._pos + pos
        elif whence == io.SEEK_END:
            new = self._size + pos
        else:
            raise ValueError(f"bad whence {whence}")
        if new < 0:
            raise ValueError("negative seek position")
        self._pos = new
        return new

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._size:
            return b""
        if n is None or n < 0:
            n = self._size - self._pos
        n = min(n, self._size - self._pos)
        data = self._image.read(self._base + self._pos, n)
        self._pos += len(data)
        return data

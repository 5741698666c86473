"""An in-memory stand-in for a dissect filesystem, to unit-test guest logic without images."""

from __future__ import annotations

import io
from types import SimpleNamespace

from offline_ic.guest.linux.fs import GuestFS


class _Entry:
    def __init__(self, node):
        self.node = node  # dict (dir), bytes (file) or ("link", target)

    def get(self, name: str) -> _Entry:
        if not isinstance(self.node, dict) or name not in self.node:
            raise FileNotFoundError(name)
        return _Entry(self.node[name])

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return isinstance(self.node, dict)

    def is_symlink(self) -> bool:
        return isinstance(self.node, tuple)

    def readlink(self) -> str:
        return self.node[1]

    def listdir(self) -> list[str]:
        return list(self.node)

    def open(self):
        return io.BytesIO(self.node)

    def stat(self):
        return SimpleNamespace(st_size=len(self.node))


class FakeFS:
    def __init__(self, files: dict[str, str | bytes | tuple]):
        self.root: dict = {}
        for path, content in files.items():
            *dirs, name = [p for p in path.split("/") if p]
            node = self.root
            for d in dirs:
                node = node.setdefault(d, {})
            if isinstance(content, str):
                content = content.encode()
            node[name] = {} if content == {} else content

    def get(self, path: str) -> _Entry:
        entry = _Entry(self.root)
        for part in [p for p in path.split("/") if p]:
            entry = entry.get(part)
        return entry


def link(target: str) -> tuple[str, str]:
    return ("link", target)


def guest_fs(files: dict) -> GuestFS:
    return GuestFS(FakeFS(files))

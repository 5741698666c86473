"""A Windows guest's files, wherever they are: an NTFS volume in an image, a mounted
guest root (``E:\\`` after Mount-VHD), or a bare hive file the user extracted.

The domain code (services, KVP, checks) asks a ``WindowsGuest`` for hives and files and
never cares which of the three it has.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import BinaryIO

from offline_ic.errors import NotFoundError, OfflineICError
from offline_ic.registry import Hive
from offline_ic.registry.hive import HiveSource

CONFIG_DIR = "Windows/System32/config"
HIVE_NAMES = ("SYSTEM", "SOFTWARE")


class WindowsGuest(ABC):
    """Read access to one Windows installation; hives are opened once and cached.

    A dirty hive is shown as Windows would see it at boot: recovered in memory from the
    ``.LOG1``/``.LOG2`` beside it (the files are not changed). When that cannot be done, the
    primary file is read as it is and the reason is kept in ``recovery_problems``.
    """

    description: str

    def __init__(self) -> None:
        self._hives: dict[str, Hive] = {}
        self.recovery_problems: dict[str, str] = {}

    @abstractmethod
    def open_file(self, path: str) -> BinaryIO:
        """Open a guest file (path relative to the volume root, case-insensitive)."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """True when the guest has ``path``."""

    def hive_location(self, name: str) -> str:
        """Where hive ``name`` is, for messages and JSON."""
        return f"{self.description}: {CONFIG_DIR}/{name}"

    def hive(self, name: str) -> Hive:
        """The hive ``name`` ("SYSTEM" or "SOFTWARE"), read-only, lazily parsed."""
        name = name.upper()
        if name not in self._hives:
            self._hives[name] = self._open_hive(name)
        return self._hives[name]

    def _hive_path(self, name: str) -> str:
        path = f"{CONFIG_DIR}/{name}"
        if not self.exists(path):
            raise NotFoundError(f"{self.description}: no {name} hive ({path})")
        return path

    def _open_primary(self, name: str) -> HiveSource:
        return self.open_file(self._hive_path(name))

    def _open_log(self, name: str, ext: str) -> HiveSource:
        return self.open_file(f"{CONFIG_DIR}/{name}.{ext}")

    def _open_hive(self, name: str) -> Hive:
        label = self.hive_location(name)
        hive = Hive.open(self._open_primary(name), name=label)
        if not hive.is_dirty:
            return hive
        present = [ext for ext, ok in self.hive_log_present(name).items() if ok]
        if not present:
            self.recovery_problems[name] = "no .LOG1/.LOG2 beside it"
            return hive
        logs = {ext: self._open_log(name, ext) for ext in present}
        try:
            return Hive.open(
                self._open_primary(name), name=label, log1=logs.get("LOG1"), log2=logs.get("LOG2")
            )
        except OfflineICError as exc:
            self.recovery_problems[name] = str(exc)
            return hive

    def hive_log_present(self, name: str) -> dict[str, bool]:
        """Which transaction logs (.LOG1/.LOG2) lie beside hive ``name``."""
        return {ext: self.exists(f"{CONFIG_DIR}/{name}.{ext}") for ext in ("LOG1", "LOG2")}

    def close(self) -> None:  # noqa: B027 - only image-backed guests hold something open
        """Release what the guest holds open (the image, for image-backed guests)."""


class NtfsWindowsGuest(WindowsGuest):
    """Windows on an NTFS volume of a disk image."""

    def __init__(self, ntfs, description: str, image=None, volume=None):
        super().__init__()
        self.ntfs = ntfs
        self.image = image
        self.volume = volume
        self.description = description

    def open_file(self, path: str) -> BinaryIO:
        return self.ntfs.open(path)

    def exists(self, path: str) -> bool:
        return self.ntfs.exists(path)

    def close(self) -> None:
        if self.image is not None:
            self.image.close()


class DirectoryWindowsGuest(WindowsGuest):
    """A mounted guest root; names are matched case-insensitively as NTFS would."""

    def __init__(self, root: str):
        super().__init__()
        self.root = root
        self.description = root

    def _resolve(self, path: str) -> str | None:
        current = self.root
        for part in path.replace("\\", "/").strip("/").split("/"):
            candidate = os.path.join(current, part)
            if os.path.exists(candidate):
                current = candidate
                continue
            try:
                entries = os.listdir(current)
            except OSError:
                return None
            match = next((e for e in entries if e.lower() == part.lower()), None)
            if match is None:
                return None
            current = os.path.join(current, match)
        return current

    def open_file(self, path: str) -> BinaryIO:
        resolved = self._resolve(path)
        if resolved is None or not os.path.isfile(resolved):
            raise NotFoundError(f"{self.root}: {path} not found")
        return open(resolved, "rb")

    def exists(self, path: str) -> bool:
        return self._resolve(path) is not None


class HiveFileGuest(WindowsGuest):
    """A bare hive file: serves only the hive it is (SYSTEM or SOFTWARE, told by its content)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.description = path
        self.kind = "HIVE"  # until the content tells
        hive = self._open_hive(self.kind)
        self.kind = hive_kind(hive)
        self._hives[self.kind] = hive
        if "HIVE" in self.recovery_problems:
            self.recovery_problems[self.kind] = self.recovery_problems.pop("HIVE")

    def open_file(self, path: str) -> BinaryIO:
        raise NotFoundError(f"{self.path} is a bare {self.kind} hive, not a guest volume")

    def exists(self, path: str) -> bool:
        return False

    def hive_location(self, name: str) -> str:
        return self.path

    def hive_log_present(self, name: str) -> dict[str, bool]:
        return {ext: os.path.exists(f"{self.path}.{ext}") for ext in ("LOG1", "LOG2")}

    def _open_primary(self, name: str) -> HiveSource:
        if name not in (self.kind, "HIVE"):
            needed = "KVP values" if name == "SOFTWARE" else "service settings"
            raise NotFoundError(
                f"{self.path} is a {self.kind} hive; {needed} live in the {name} hive"
            )
        return self.path

    def _open_log(self, name: str, ext: str) -> HiveSource:
        return f"{self.path}.{ext}"


def hive_kind(hive: Hive) -> str:
    """'SYSTEM', 'SOFTWARE' or 'OTHER', from the keys only that hive has."""
    if hive.find_key("Select") is not None and hive.find_key("ControlSet001") is not None:
        return "SYSTEM"
    if hive.find_key("Microsoft") is not None:
        return "SOFTWARE"
    return "OTHER"

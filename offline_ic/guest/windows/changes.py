"""A registry value change in a Windows guest: which hive, key and value, and what it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ValueChange:
    """One value to set (``type`` and ``data``) or delete (``type`` None) in a hive."""

    hive: str  # "SYSTEM" | "SOFTWARE"
    key: str
    name: str
    type: int | None = None
    data: object = None
    create_key: bool = False  # KVP pools may not exist yet; service keys must
    before: object = None
    present_before: bool = False

    @property
    def is_delete(self) -> bool:
        return self.type is None

    def to_dict(self) -> dict[str, Any]:
        after = None if self.is_delete else self.data
        return {
            "hive": self.hive,
            "key": self.key,
            "name": self.name,
            "action": "delete" if self.is_delete else "set",
            "before": self.before if self.present_before else None,
            "present_before": self.present_before,
            "after": after,
            "changed": self.present_before != (not self.is_delete) or self.before != after,
        }

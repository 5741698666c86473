"""A registry change in a Windows guest: which hive, key and value, and what it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offline_ic.registry.regtext import ValueSpec


@dataclass
class ValueChange:
    """One value to set (``type`` and ``data``) or delete (``type`` None) in a hive, or,
    with ``delete_key``, key ``key`` to delete with everything below it (``name`` unused).

    ``hive`` names the hive in reports ("SYSTEM", "SOFTWARE", "SAM", …, or ``HKU\\<SID>``);
    ``hive_path`` is its file in the guest when that is not ``Windows/System32/config/<hive>``
    (a user's NTUSER.DAT, the BCD).
    """

    hive: str
    key: str
    name: str
    type: int | None = None
    data: object = None
    create_key: bool = False  # KVP pools may not exist yet; service keys must
    before: object = None
    present_before: bool = False
    hive_path: str | None = None
    delete_key: bool = False
    make_key: bool = False  # only create ``key`` (a .reg file's [KEY] line without values)
    verify: bool = True  # False: a later change of the same command undoes or redoes it
    # set when the change is planned: the hive already is as asked (same type and bytes, or
    # absent for a delete); None before that
    as_asked: bool | None = None
    # ``reg set``/``hive set`` data as the user gave it: the type and data are decided
    # against the value it replaces when the change is planned (``regtext.resolve_spec``)
    spec: ValueSpec | None = None
    change_type: bool = False  # an explicit type may differ from the existing value's

    @property
    def location(self) -> str:
        """The hive file in the guest (volume-relative path)."""
        from offline_ic.guest.windows.guest import CONFIG_DIR

        return self.hive_path or f"{CONFIG_DIR}/{self.hive}"

    @property
    def is_delete(self) -> bool:
        return self.type is None and not self.make_key

    def to_dict(self) -> dict[str, Any]:
        after = None if self.is_delete else self.data
        action = "delete_key" if self.delete_key else "delete" if self.is_delete else "set"
        if self.make_key:
            action = "create_key"
        doc: dict[str, Any] = {
            "hive": self.hive,
            "key": self.key,
            "name": self.name,
            "action": action,
            "before": _jsonable(self.before) if self.present_before else None,
            "present_before": self.present_before,
            "after": _jsonable(after),
            "changed": self.present_before != (not self.is_delete) or self.before != after,
        }
        if self.make_key or self.delete_key:
            doc["changed"] = self.present_before != self.make_key
        if self.as_asked is not None:  # decided on the hive's bytes, type included
            doc["changed"] = not self.as_asked
        if self.hive_path is not None:
            doc["hive_path"] = self.hive_path
        return doc


def _jsonable(data: object) -> object:
    """Bytes as hex in JSON (``hex:…`` would be the .reg word); other data as it is."""
    return data.hex() if isinstance(data, bytes | bytearray) else data

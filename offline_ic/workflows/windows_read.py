"""Read-only Windows workflows: services list, kvp get, inspect."""

from __future__ import annotations

from typing import Any

from offline_ic.errors import NotFoundError, OfflineICError
from offline_ic.guest.windows.catalog import resolve_service
from offline_ic.guest.windows.guest import HiveFileGuest, NtfsWindowsGuest, WindowsGuest
from offline_ic.guest.windows.kvp import KVP_POOLS, pool_key_path, read_all_pools, read_pool
from offline_ic.guest.windows.services import read_services
from offline_ic.registry import Hive
from offline_ic.target import open_windows_guest


def hive_facts(guest: WindowsGuest, name: str) -> dict[str, Any]:
    """State of one hive: clean/dirty, both sequence numbers, logs beside it."""
    hive = guest.hive(name)
    return {
        "location": guest.hive_location(name),
        "state": "dirty" if hive.is_dirty else "clean",
        "sequence1": hive.sequence1,
        "sequence2": hive.sequence2,
        "logs": guest.hive_log_present(name),
    }


def services_list(target: str, *, parent: str | None = None, volume: int | None = None,
                  only: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``services list --json`` document."""
    wanted = {resolve_service(n).name for n in only}
    guest = open_windows_guest(target, parent=parent, volume=volume)
    try:
        system = guest.hive("SYSTEM")
        report = read_services(system).to_dict()
        if wanted:
            report["services"] = [s for s in report["services"] if s["name"] in wanted]
        doc = {"image": target, **report}
        doc["hive_sequence"] = [system.sequence1, system.sequence2]
        return doc
    finally:
        guest.close()


def kvp_get(target: str, pool: str = "parameters", *, parent: str | None = None,
            volume: int | None = None) -> dict[str, Any]:
    """The ``kvp get --json`` document: one pool, or all of them with ``pool='all'``."""
    if pool != "all":
        pool_key_path(pool)  # unknown pool: usage error before opening anything
    guest = open_windows_guest(target, parent=parent, volume=volume)
    try:
        software = guest.hive("SOFTWARE")
        if pool == "all":
            return {"pools": read_all_pools(software)}
        return {"pool": pool, "values": read_pool(software, pool)}
    finally:
        guest.close()


def windows_version(software: Hive) -> dict[str, Any]:
    """Product name and build from SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion."""
    key = software.find_key("Microsoft\\Windows NT\\CurrentVersion")
    if key is None:
        return {"family": "windows"}
    out: dict[str, Any] = {"family": "windows"}
    for field, value_name in (
        ("product_name", "ProductName"),
        ("edition", "EditionID"),
        ("display_version", "DisplayVersion"),
        ("build", "CurrentBuild"),
        ("ubr", "UBR"),
    ):
        value = key.value(value_name)
        if value is not None:
            out[field] = value.data
    return out


def inspect_target(target: str, *, parent: str | None = None,
                   volume: int | None = None) -> dict[str, Any]:
    """Everything offline-ic can tell about a target, read-only; parts that fail say why."""
    guest = open_windows_guest(target, parent=parent, volume=volume)
    try:
        doc: dict[str, Any] = {"image": target}
        if isinstance(guest, NtfsWindowsGuest) and guest.image is not None:
            doc["image_info"] = guest.image.info().to_dict()
            from offline_ic.volumes import list_volumes

            doc["volumes"] = [v.to_dict() for v in list_volumes(guest.image)]
            doc["windows_volume"] = guest.volume.number if guest.volume else None
            doc["volume_state"] = {
                "dirty": guest.ntfs.is_dirty(),
                "hibernation": guest.ntfs.hibernation_signature(),
            }
        elif isinstance(guest, HiveFileGuest):
            doc["target_type"] = f"{guest.kind} hive file"
        else:
            doc["target_type"] = "directory"

        doc["hives"] = {}
        doc["errors"] = {}
        for name in ("SYSTEM", "SOFTWARE"):
            try:
                doc["hives"][name] = hive_facts(guest, name)
            except NotFoundError as exc:
                doc["hives"][name] = None
                doc["errors"][name] = str(exc)
        doc["os"] = {"family": "windows"}
        doc["services"] = None
        doc["kvp"] = None
        if doc["hives"]["SOFTWARE"]:
            software = guest.hive("SOFTWARE")
            doc["os"] = windows_version(software)
            doc["kvp"] = read_all_pools(software)
        if doc["hives"]["SYSTEM"]:
            try:
                doc["services"] = read_services(guest.hive("SYSTEM")).to_dict()
            except OfflineICError as exc:
                doc["errors"]["services"] = str(exc)
        return doc
    finally:
        guest.close()


__all__ = ["KVP_POOLS", "hive_facts", "inspect_target", "kvp_get", "services_list"]

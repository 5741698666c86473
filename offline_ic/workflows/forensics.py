"""Forensic facts of a stopped VM, read-only: when things last changed, and what was read.

Why a module of its own: ``inspect`` says what the services are set to; a responder also
needs *when* (registry key last-write times, the last shutdown, the install date), *who*
(computer name, last logged-on user, the host that last pushed KVP values) and proof of
what was examined (sha256 of every file read, opened read-only). Every timestamp is UTC,
ISO 8601, and each also goes into one sorted ``timeline``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from offline_ic.errors import OfflineICError
from offline_ic.guest.windows.catalog import INTEGRATION_SERVICES
from offline_ic.guest.windows.kvp import KVP_POOLS
from offline_ic.guest.windows.services import last_boot_control_set
from offline_ic.image import DiskImage
from offline_ic.inputs import open_readonly
from offline_ic.registry import Hive, Key
from offline_ic.registry.hive import filetime_to_datetime

HASH_CHUNK = 1 << 20
Progress = Callable[[int, int], None]  # (bytes hashed so far, bytes to hash in all)


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with a Z, to the second's fraction the source has."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def posix_iso(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, UTC))


def _key_time(hive: Hive, path: str) -> str | None:
    key = hive.find_key(path)
    return iso(key.last_written) if key is not None else None


def _value(key: Key | None, name: str) -> Any:
    value = key.value(name) if key is not None else None
    return value.data if value is not None else None


def windows_facts(system: Hive | None, software: Hive | None) -> dict[str, Any]:
    """Key last-write times and the identity facts of a Windows guest's hives."""
    out: dict[str, Any] = {"key_last_written": {}}
    times = out["key_last_written"]
    if system is not None:
        times["SYSTEM\\Select"] = _key_time(system, "Select")
        try:
            cs = last_boot_control_set(system)  # where the running guest wrote
        except OfflineICError as exc:
            out["system_problem"] = str(exc)
        else:
            for spec in INTEGRATION_SERVICES:
                path = f"{cs}\\Services\\{spec.name}"
                times[f"SYSTEM\\{path}"] = _key_time(system, path)
            name_key = system.find_key(f"{cs}\\Control\\ComputerName\\ComputerName")
            out["computer_name"] = _value(name_key, "ComputerName")
            raw = _value(system.find_key(f"{cs}\\Control\\Windows"), "ShutdownTime")
            if isinstance(raw, bytes) and len(raw) == 8:
                out["shutdown_time"] = iso(filetime_to_datetime(struct.unpack("<Q", raw)[0]))
            else:
                out["shutdown_time"] = None
    if software is not None:
        for path in KVP_POOLS.values():
            times[f"SOFTWARE\\{path}"] = _key_time(software, path)
        _software_facts(software, out)
    return out


def _software_facts(software: Hive, out: dict[str, Any]) -> None:
    current = software.find_key("Microsoft\\Windows NT\\CurrentVersion")
    out["os_build"] = _value(current, "CurrentBuild")
    install = _value(current, "InstallDate")  # REG_DWORD, POSIX seconds
    out["install_date"] = posix_iso(install) if isinstance(install, int) and install else None
    logon = software.find_key("Microsoft\\Windows\\CurrentVersion\\Authentication\\LogonUI")
    user = _value(logon, "LastLoggedOnUser")
    if user is None:  # before Windows Vista's LogonUI key, and on many servers
        winlogon = software.find_key("Microsoft\\Windows NT\\CurrentVersion\\Winlogon")
        user = _value(winlogon, "DefaultUserName")
    out["last_logged_on_user"] = user


def linux_facts(gfs: Any) -> dict[str, Any]:
    """Hostname and the KVP pool files' modification times of a Linux guest."""
    from offline_ic.guest.linux.kvp import POOL_DIR, POOL_NAMES

    hostname = gfs.try_text("/etc/hostname", 4096) if gfs.exists("/etc/hostname") else None
    pools: dict[str, Any] = {}
    for index, name in POOL_NAMES.items():
        path = f"{POOL_DIR}/.kvp_pool_{index}"
        entry: dict[str, Any] = {"path": path, "present": gfs.exists(path), "mtime": None}
        if entry["present"]:
            try:
                mtime = gfs.mtime(path)
                entry["mtime"] = posix_iso(mtime) if mtime is not None else None
                entry["size"] = gfs.size(path)
            except OfflineICError as exc:
                entry["problem"] = str(exc)
        pools[name] = entry
    from offline_ic.guest.linux.wtmp import read_wtmp

    try:
        wtmp = read_wtmp(gfs)
    except OfflineICError as exc:
        wtmp = {"problem": str(exc)}
    return {
        "hostname": hostname.strip() if hostname else None,
        "kvp_pool_files": pools,
        "wtmp": wtmp,
    }


def disk_chain(info: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each file of the differencing chain, current disk first: size, mtime, VHDX GUIDs."""
    chain = []
    node = info
    while node:
        st = os.stat(node["path"])
        extra = node  # ImageInfo.to_dict() flattens the format's extra facts into the node
        chain.append(
            {
                "path": node["path"],
                "format": node["format"],
                "disk_type": node.get("disk_type"),
                "size": st.st_size,
                "mtime": posix_iso(st.st_mtime),
                "file_write_guid": extra.get("file_write_guid"),
                "data_write_guid": extra.get("data_write_guid"),
                "log_guid": extra.get("log_guid"),
                "log_pending": str(extra.get("log", "")).startswith("pending"),
            }
        )
        node = node.get("parent")
    return chain


def timeline(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Every timestamp of the forensic facts, oldest first."""
    events: list[dict[str, str]] = []
    facts = doc.get("forensics") or {}
    for key, when in (facts.get("key_last_written") or {}).items():
        if when:
            events.append({"time": when, "event": f"key last written: {key}"})
    for field, label in (
        ("shutdown_time", "last shutdown (Control\\Windows\\ShutdownTime)"),
        ("install_date", "Windows installed (InstallDate)"),
    ):
        if facts.get(field):
            events.append({"time": facts[field], "event": label})
    wtmp = facts.get("wtmp") or {}
    for field, label in (
        ("last_boot", "last boot (wtmp)"),
        ("last_shutdown", "last shutdown (wtmp)"),
    ):
        if wtmp.get(field):
            events.append({"time": wtmp[field]["time"], "event": label})
    for name, pool in (facts.get("kvp_pool_files") or {}).items():
        if pool.get("mtime"):
            events.append({"time": pool["mtime"], "event": f"KVP pool file {name} modified"})
    for disk in facts.get("disk_chain") or []:
        events.append({"time": disk["mtime"], "event": f"disk file modified: {disk['path']}"})
    return sorted(events, key=lambda e: e["time"])


def opened_read_only(image: DiskImage | None) -> bool | None:
    """Is every file of the chain open read-only (asked of the kernel, not assumed)?"""
    if image is None:
        return None
    node: DiskImage | None = image
    while node is not None:
        fd = getattr(getattr(node, "io", None), "fd", -1)
        if fd is None or fd < 0:
            return None
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY:
            return False
        node = node.parent
    return True


def read_ranges(image: DiskImage | None) -> dict[str, list[tuple[int, int]]]:
    """The byte ranges read so far from each file of the chain (merged), by path."""
    out: dict[str, list[tuple[int, int]]] = {}
    node = image
    while node is not None:
        log = getattr(getattr(node, "io", None), "reads", None)
        if log is not None:
            out[node.path] = log.merged()
        node = node.parent
    return out


def sha256_ranges(path: str, ranges: list[tuple[int, int]], step: Callable[[int], None]) -> str:
    """sha256 over the bytes of ``ranges`` of ``path``, in file order, concatenated."""
    digest = hashlib.sha256()
    with open_readonly(path, check=False) as fh:
        for start, end in ranges:
            fh.seek(start)
            left = end - start
            while left > 0 and (chunk := fh.read(min(HASH_CHUNK, left))):
                digest.update(chunk)
                left -= len(chunk)
                step(len(chunk))
    return digest.hexdigest()


def sha256_file(path: str, step: Callable[[int], None] | None = None) -> str:
    """Streaming sha256 (1 MiB reads; the file is opened read-only); ``step(n)`` after
    each chunk of ``n`` bytes."""
    digest = hashlib.sha256()
    with open_readonly(path, check=False) as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            if step is not None:
                step(len(chunk))
    return digest.hexdigest()


def evidence(
    files: list[tuple[str, str]],
    *,
    read_only: bool | None,
    command_line: list[str] | None,
    progress: Progress | None = None,
    only_read: dict[str, list[tuple[int, int]]] | None = None,
) -> dict[str, Any]:
    """The evidence record: each (role, path) with size and sha256, and how it was read.
    ``progress(done, total)`` follows the hashing (the CLI draws it on a terminal).
    ``only_read``: for the files named there, hash only those byte ranges (what the
    inspection read), for disks too large to hash whole."""
    from offline_ic import __version__

    started = datetime.now(UTC)
    only_read = only_read or {}
    stats = [os.stat(path) for _, path in files]
    total = sum(
        sum(e - s for s, e in only_read[path]) if path in only_read else st.st_size
        for (_, path), st in zip(files, stats, strict=True)
    )
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    rows = []
    for (role, path), st in zip(files, stats, strict=True):
        row: dict[str, Any] = {
            "role": role,
            "path": os.path.abspath(path),
            "resolved_path": os.path.realpath(path),  # symlinks followed: the file hashed
            "size": st.st_size,
            "mtime": posix_iso(st.st_mtime),
        }
        if path in only_read:
            ranges = only_read[path]
            row["hashed"] = "ranges read"
            row["ranges"] = [[start, end] for start, end in ranges]
            row["bytes_hashed"] = sum(end - start for start, end in ranges)
            row["sha256"] = sha256_ranges(path, ranges, step)
        else:
            row["hashed"] = "whole file"
            row["sha256"] = sha256_file(path, step)
        rows.append(row)
    return {
        "tool": "offline-ic",
        "tool_version": __version__,
        "command_line": command_line if command_line is not None else list(sys.argv),
        "utc_time": iso(started),
        "opened_read_only": read_only,
        "files": rows,
    }

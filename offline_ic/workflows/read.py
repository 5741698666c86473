"""Read-only Windows workflows: services list, kvp get, inspect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from offline_ic.errors import InputError, NotFoundError, OfflineICError
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.linux.kvp import read_kvp_pools
from offline_ic.guest.windows.catalog import resolve_service
from offline_ic.guest.windows.guest import HiveFileGuest, NtfsWindowsGuest, WindowsGuest
from offline_ic.guest.windows.kvp import KVP_POOLS, pool_key_path, read_all_pools, read_pool
from offline_ic.guest.windows.services import read_services, select_control_sets
from offline_ic.host.vmcx import HostConfig, compare
from offline_ic.registry import Hive
from offline_ic.target import HIVE_FILE, VM, Target, open_target
from offline_ic.volumes import list_volumes


def hive_facts(guest: WindowsGuest, name: str) -> dict[str, Any]:
    """State of one hive: clean/dirty, both sequence numbers, logs beside it."""
    hive = guest.hive(name)
    return {
        "location": guest.hive_location(name),
        "state": "dirty" if hive.is_dirty else "clean",
        "sequence1": hive.sequence1,
        "sequence2": hive.sequence2,
        "logs": guest.hive_log_present(name),
        "recovered": hive.recovered,
        "recovery_problem": guest.recovery_problems.get(name),
    }


def log_facts(opened: Target, hives: tuple[str, ...]) -> dict[str, Any]:
    """What was replayed in memory to read ``opened`` (the files are unchanged): the hives
    recovered from their .LOG1/.LOG2 (``recovered_from_logs``, the word writes use too) and
    the disks of the chain whose pending VHDX log was replayed (``vhdx_logs_pending``)."""
    from offline_ic.image.vhdx.image import VhdxReader

    guest = opened.guest
    recovered = []
    if isinstance(guest, WindowsGuest):
        for name in hives:
            if guest.hive(name).recovered:
                logs = [ext for ext, present in guest.hive_log_present(name).items() if present]
                recovered.append({"hive": name, "logs": logs})
    pending = []
    node = opened.image
    while node is not None:
        if isinstance(node, VhdxReader) and node.header.log_guid.int:
            pending.append({"path": node.path, "entries": node.overlay.entries})
        node = node.parent
    return {
        "recovered_from_logs": [r["hive"] for r in recovered],
        "recovered_logs": {r["hive"]: r["logs"] for r in recovered},
        "vhdx_logs_pending": pending,
    }


def services_list(
    target: str,
    *,
    parent: str | None = None,
    volume: int | None = None,
    only: tuple[str, ...] = (),
    control_set: str | int | None = None,
) -> dict[str, Any]:
    """The ``services list --json`` document: the set that boots next, or ``control_set``
    (N; ``"all"``: the first set on top and every set under ``control_sets``)."""
    wanted = {listed_name(n) for n in only}
    with open_target(target, parent=parent, volume=volume, family="windows") as opened:
        guest = opened.guest
        assert isinstance(guest, WindowsGuest)  # family="windows" returns nothing else
        system = guest.hive("SYSTEM")
        sets = select_control_sets(system, control_set)
        reports = [read_services(system, cs).to_dict() for cs in sets]
        # on top: the set that boots next when it is among them (``all``), else the one chosen
        boots = reports[0]["select"]["boots"]
        report = next((r for r in reports if r["control_set"] == boots), reports[0])
        if opened.vm is not None:  # a VM: the host side beside the guest's
            report["host_vs_guest"] = compare(opened.vm.host, report["services"])
            report["vm"] = opened.vm.to_dict()
        if wanted:  # both tables: --service heartbeat shows the heartbeat row only
            for each in reports:
                each["services"] = [s for s in each["services"] if s["name"] in wanted]
                each["drivers"] = [d for d in each["drivers"] if d["name"] in wanted]
            report["filter"] = sorted(wanted)
            if "host_vs_guest" in report:
                report["host_vs_guest"] = [
                    r for r in report["host_vs_guest"] if r["service"] in wanted
                ]
        if len(sets) > 1 or control_set is not None:
            report["control_sets"] = {
                r["control_set"]: {"services": r["services"], "drivers": r["drivers"]}
                for r in reports
            }
        doc = {"image": target, **report}
        doc["hive_sequence"] = [system.sequence1, system.sequence2]
        doc["hive_recovered"] = system.recovered
        if system.is_dirty and not system.recovered:
            doc["hive_recovery_problem"] = guest.recovery_problems.get("SYSTEM")
        return doc | log_facts(opened, ("SYSTEM",))


def listed_name(name: str) -> str:
    """The key name ``services list --service NAME`` means: an integration service by any of
    its names, or a Hyper-V driver by its key name (vmbus, storvsc, …); else InputError."""
    from offline_ic.guest.windows.catalog import DRIVERS

    driver = next((d.name for d in DRIVERS if d.name.lower() == name.strip().lower()), None)
    if driver is not None:
        return driver
    try:
        return resolve_service(name).name
    except InputError as exc:
        drivers = ", ".join(d.name for d in DRIVERS)
        raise InputError(f"{exc}; or a driver: {drivers}") from None


def kvp_get(
    target: str, pool: str = "parameters", *, parent: str | None = None, volume: int | None = None
) -> dict[str, Any]:
    """The ``kvp get --json`` document: one pool, or all of them with ``pool='all'``."""
    if pool != "all":
        pool_key_path(pool)  # unknown pool: usage error before opening anything
    with open_target(target, parent=parent, volume=volume) as opened:
        guest = opened.guest
        if guest is None:
            raise InputError(f"{target}: a Hyper-V VM configuration holds no KVP pools")
        if isinstance(guest, WindowsGuest):
            doc = _windows_kvp(guest, pool)
        else:
            pools = read_kvp_pools(guest)
            doc = (
                {"pools": pools} if pool == "all" else {"pool": pool, "values": pools.get(pool, {})}
            )
        hives = ("SOFTWARE",) if isinstance(guest, WindowsGuest) else ()
        return {"image": target, **doc, **log_facts(opened, hives)}


def _windows_kvp(guest: WindowsGuest, pool: str) -> dict[str, Any]:
    software = guest.hive("SOFTWARE")
    if pool == "all":
        return {"pools": read_all_pools(software)}
    return {"pool": pool, "values": read_pool(software, pool)}


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


# a volume's file-system signature that says its contents are encrypted
ENCRYPTED = {"bitlocker": "BitLocker", "luks": "LUKS"}


def inspect_target(
    target: str,
    *,
    parent: str | None = None,
    volume: int | None = None,
    vmcx: str | None = None,
    evidence: bool = False,
    command_line: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    hash_only_read: bool = False,
) -> dict[str, Any]:
    """Everything offline-ic can tell about a target, read-only; parts that fail say why.

    An image without a guest still gets its image facts and volumes (forensics needs them);
    only a target that cannot be opened at all is an error. A VM (a config file or a VM
    folder), or ``vmcx`` beside an image, adds the host side: what Hyper-V offers the VM,
    compared with the guest. ``forensics`` and ``timeline`` always come; ``evidence``
    hashes every file read (sha256) after the inspection, with ``hash_only_read`` only the
    byte ranges of the disk files that were read.
    """
    from offline_ic.host.vmfolder import read_config
    from offline_ic.workflows import forensics as fx

    host = read_config(vmcx) if vmcx else None
    with open_target(target, parent=parent, volume=volume, require_guest=False) as opened:
        if opened.vm is not None and host is None:  # an explicit --vmcx wins
            host = opened.vm.host
        if opened.image is None and opened.guest is None:  # a VM none of whose disks is here
            doc: dict[str, Any] = {"image": target, "target_type": VM, "errors": {}}
        else:
            doc = _inspect_opened(opened)
        if opened.vm is not None:
            doc["target_type"] = VM
            doc["vm"] = opened.vm.to_dict()
            missing = doc["vm"]["missing"]
            if missing:
                doc["errors"]["missing_disks"] = "not in the VM folder: " + "; ".join(missing)
        doc["forensics"] = _forensics(opened, doc)
        if opened.guest is not None:
            doc["checks"] = _checks(target, opened, host)
        read_only = fx.opened_read_only(opened.image)
        ranges = fx.read_ranges(opened.image) if hash_only_read else None
    if host is not None:
        doc["host"] = host.to_dict()
        if doc.get("services"):
            doc["host_vs_guest"] = compare(host, doc["services"]["services"])
    doc["timeline"] = fx.timeline(doc)
    if evidence:
        files = [("disk", d["path"]) for d in doc["forensics"].get("disk_chain", [])]
        if host is not None:
            files.append(("config", host.path))
        if opened.kind == HIVE_FILE:
            files.append(("hive", target))
        doc["evidence"] = fx.evidence(
            files,
            read_only=read_only,
            command_line=command_line,
            progress=progress,
            only_read=ranges,
        )
    return doc


def _checks(target: str, opened: Target, host: HostConfig | None) -> dict[str, Any]:
    """The verdicts ``offline-ic check`` gives this guest (no policy: the report says what
    the guest is, a gate's policy is the gate's), so a report never hides a blacklisted
    hv_utils or a disabled storvsc; a check that cannot run is its error."""
    from offline_ic.workflows.check import check_guest

    assert opened.guest is not None
    try:
        report = check_guest(target, opened.guest, host).to_dict()
    except OfflineICError as exc:
        return {"result": None, "counts": {}, "checks": [], "error": str(exc)}
    return {key: report[key] for key in ("result", "counts", "checks")}


def _forensics(opened: Target, doc: dict[str, Any]) -> dict[str, Any]:
    """The forensic facts of an opened target (see workflows/forensics.py)."""
    from offline_ic.workflows import forensics as fx

    out: dict[str, Any] = {}
    if opened.image is not None:
        out["disk_chain"] = fx.disk_chain(doc.get("image_info"))
    guest = opened.guest
    try:
        if isinstance(guest, WindowsGuest):
            hives = doc.get("hives") or {}
            system = guest.hive("SYSTEM") if hives.get("SYSTEM") else None
            software = guest.hive("SOFTWARE") if hives.get("SOFTWARE") else None
            out.update(fx.windows_facts(system, software))
        elif isinstance(guest, LinuxGuest):
            out.update(fx.linux_facts(guest.fs))
    except OfflineICError as exc:
        doc["errors"]["forensics"] = str(exc)
    return out


def _inspect_opened(opened: Target) -> dict[str, Any]:
    doc: dict[str, Any] = {"image": opened.path, "errors": {}}
    guest = opened.guest
    if opened.image is None:
        doc["target_type"] = (
            f"{guest.kind} hive file" if isinstance(guest, HiveFileGuest) else "directory"
        )
    else:
        doc["target_type"] = "image"
        doc["image_info"] = opened.image.info().to_dict()
        doc["volumes"] = [
            {**v.to_dict(), "encryption": ENCRYPTED.get(v.filesystem or "")}
            for v in list_volumes(opened.image)
        ]
    if guest is None:
        doc["os"] = None
        doc["errors"]["os"] = str(opened.problem)
    elif not isinstance(guest, WindowsGuest):
        _inspect_linux(guest, doc)
    else:
        if isinstance(guest, NtfsWindowsGuest):
            doc["windows_volume"] = guest.volume.number if guest.volume else None
            doc["volume_state"] = {
                "dirty": guest.ntfs.is_dirty(),
                "hibernation": guest.ntfs.hibernation_signature(),
            }
        _inspect_windows(guest, doc)
        if opened.image is not None:
            doc["bcd"] = bcd_facts(guest)
    return doc


def bcd_facts(guest: WindowsGuest) -> dict[str, Any]:
    """The boot manager's default entry, as ``bcdedit /enum {default}`` lists it."""
    from offline_ic.guest.windows.bcd import guest_store

    store, _, _, why = guest_store(guest)
    if store is None:
        return {"store": None, "error": why, "default": None}
    return {"store": store.where, "error": None, "default": dict(store.default.bcdedit())}


def _inspect_linux(guest: LinuxGuest, doc: dict[str, Any]) -> None:
    from offline_ic.guest.linux.kernels import choose_default, find_kernels

    kernels = find_kernels(guest.fs)
    choice = choose_default(guest.fs, kernels)
    doc["linux_root_volume"] = guest.root_volume.number
    doc["os"] = {
        "family": "linux",
        "distro": guest.distro,
        "distro_family": guest.family,
        "kernels": [k.version for k in kernels],
        "default_kernel": choice.kernel.version if choice.kernel else None,
        "default_kernel_reason": choice.reason,
    }
    doc["kvp"] = read_kvp_pools(guest)
    if guest.notes:
        doc["errors"]["linux"] = "; ".join(guest.notes)


def _inspect_windows(guest: WindowsGuest, doc: dict[str, Any]) -> None:
    doc["hives"] = {}
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
        from offline_ic.guest.windows.golden import ic_version

        software = guest.hive("SOFTWARE")
        doc["os"] = windows_version(software)
        doc["kvp"] = read_all_pools(software)
        ics = ic_version(software)
        doc["integration_components"] = {
            "version": ics.version,
            "by_windows_update": ics.by_windows_update,
            "detail": ics.describe(),
        }
    if doc["hives"]["SYSTEM"]:
        try:
            doc["services"] = read_services(guest.hive("SYSTEM")).to_dict()
        except OfflineICError as exc:
            doc["errors"]["services"] = str(exc)


__all__ = ["KVP_POOLS", "hive_facts", "inspect_target", "kvp_get", "services_list"]

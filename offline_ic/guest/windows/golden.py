"""Golden-image facts of a Windows guest: the setup (sysprep) state and pending reboots.

Findings only (ok / problem / not checkable); severities are in ``checks/profiles.py``
(profile ``golden``), sources in ``docs/golden.md``. Windows keeps the image state twice,
in ``SOFTWARE\\...\\Setup\\State`` ``ImageState`` and in ``%WINDIR%\\Setup\\State\\State.ini``;
both are read and the detail says which were found and whether they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from offline_ic.checks.profiles import Finding
from offline_ic.errors import OfflineICError
from offline_ic.guest.windows.bcd import (
    BcdDevice,
    BcdStore,
    DiskIds,
    guest_store,
    names_volume,
    shown,
)
from offline_ic.guest.windows.guest import WindowsGuest
from offline_ic.guest.windows.services import current_control_set
from offline_ic.registry import Hive
from offline_ic.volumes import Volume

GENERALIZED = "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"
IMAGE_STATES = (
    "IMAGE_STATE_COMPLETE",
    "IMAGE_STATE_UNDEPLOYABLE",
    GENERALIZED,
    "IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT",
    "IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE",
    "IMAGE_STATE_SPECIALIZE_RESEAL_TO_AUDIT",
)
STATE_KEY = "Microsoft\\Windows\\CurrentVersion\\Setup\\State"
STATE_INI = "Windows/Setup/State/State.ini"
STATE_INI_LIMIT = 64 << 10  # a real State.ini is two lines
SETUP_VALUES = ("SystemSetupInProgress", "OOBEInProgress", "SetupType", "CmdLine")
SESSION_MANAGER = "Control\\Session Manager"
RENAME_VALUES = ("PendingFileRenameOperations", "PendingFileRenameOperations2")
CBS_KEY = "Microsoft\\Windows\\CurrentVersion\\Component Based Servicing"
CBS_MARKERS = ("RebootPending", "RebootInProgress", "PackagesPending")
WU_REBOOT = "Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired"
PENDING_XML = "Windows/WinSxS/pending.xml"


def _value(hive: Hive | None, path: str, name: str) -> object | None:
    key = hive.find_key(path) if hive is not None else None
    value = key.value(name) if key is not None else None
    return None if value is None else value.data


def _optional_hive(guest: WindowsGuest, name: str) -> tuple[Hive | None, str]:
    """The hive, or None and why it could not be read."""
    try:
        return guest.hive(name), ""
    except OfflineICError as exc:
        return None, str(exc)


def golden_windows_findings(
    guest: WindowsGuest, accepted_states: Sequence[str] = (GENERALIZED,)
) -> list[Finding]:
    """Setup state and pending-reboot findings of ``guest``."""
    system, system_why = _optional_hive(guest, "SYSTEM")
    software, software_why = _optional_hive(guest, "SOFTWARE")
    cs = None
    if system is not None:
        try:
            cs = current_control_set(system)
        except OfflineICError as exc:
            system, system_why = None, str(exc)
    return [
        *setup_state_findings(guest, system, software, software_why, accepted_states),
        *pending_findings(guest, system, cs, system_why, software, software_why),
        *bcd_findings(guest),
        ic_version_finding(software, software_why),
    ]


def read_state_ini(guest: WindowsGuest) -> tuple[str | None, str]:
    """(ImageState of State.ini or None, what was found: 'absent', the value, or why not)."""
    if not guest.exists(STATE_INI):
        return None, "absent"
    try:
        with guest.open_file(STATE_INI) as fh:
            raw = fh.read(STATE_INI_LIMIT + 1)
    except (OfflineICError, OSError) as exc:
        return None, f"unreadable ({exc})"
    if len(raw) > STATE_INI_LIMIT:
        return None, f"not checkable: larger than {STATE_INI_LIMIT} bytes"
    text = _ini_text(raw)
    if text is None:
        return None, "not checkable: not a text file"
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
        elif section == "state" and "=" in line:
            name, _, value = line.partition("=")
            if name.strip().lower() == "imagestate":
                return value.strip(), value.strip()
    return None, "no ImageState in its [State] section"


def _ini_text(raw: bytes) -> str | None:
    """The text of an .ini file (UTF-16 with BOM, UTF-8, or ASCII), None when it is binary."""
    try:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = raw.decode("utf-16")
        else:
            text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if any(not (c.isprintable() or c in "\r\n\t") for c in text):
        return None
    return text


def setup_state_findings(
    guest: WindowsGuest,
    system: Hive | None,
    software: Hive | None,
    software_why: str,
    accepted_states: Sequence[str],
) -> list[Finding]:
    """``golden.windows.setup.image_state`` and ``.sources_agree``."""
    reg = _value(software, STATE_KEY, "ImageState")
    reg_state = reg if isinstance(reg, str) else None
    reg_shown = (
        f"SOFTWARE\\{STATE_KEY} ImageState={reg_state}"
        if reg_state is not None
        else f"SOFTWARE\\{STATE_KEY} ImageState "
        + ("absent" if software is not None else f"not read ({software_why})")
    )
    ini_state, ini_found = read_state_ini(guest)
    ini_shown = f"{STATE_INI} ImageState={ini_found}" if ini_state else f"{STATE_INI} {ini_found}"
    setup = ", ".join(
        f"{n}={_shown(_value(system, 'Setup', n))}" for n in SETUP_VALUES if system is not None
    )
    evidence = f"{reg_shown}; {ini_shown}" + (f"; SYSTEM\\Setup {setup}" if setup else "")
    state = reg_state if reg_state is not None else ini_state
    if state is None:
        verdict = Finding(
            "golden.windows.setup.image_state",
            False,
            f"image state unknown: {evidence} (want one of {', '.join(accepted_states)})",
        )
    else:
        ok = state in accepted_states
        verdict = Finding(
            "golden.windows.setup.image_state",
            ok,
            f"{state}: {evidence}"
            + (
                ""
                if ok
                else f" (want one of {', '.join(accepted_states)}; run sysprep /generalize"
                " /oobe before capture)"
            ),
        )
    if reg_state is None or ini_state is None:
        agree = Finding(
            "golden.windows.setup.sources_agree",
            None,
            f"only one place (or none) holds the image state: {reg_shown}; {ini_shown}",
        )
    else:
        agree = Finding(
            "golden.windows.setup.sources_agree",
            reg_state == ini_state,
            f"registry {reg_state}, State.ini {ini_state}"
            + ("" if reg_state == ini_state else " disagree (a sysprep that did not finish?)"),
        )
    return [verdict, agree]


def _shown(data: object) -> str:
    if data is None:
        return "absent"
    if isinstance(data, str):
        return repr(data)
    return str(data)


def pending_findings(
    guest: WindowsGuest,
    system: Hive | None,
    cs: str | None,
    system_why: str,
    software: Hive | None,
    software_why: str,
) -> list[Finding]:
    """One finding per pending-reboot source; each one found is named."""
    out = [_file_rename(system, cs, system_why)]
    if software is None:
        for cid in ("golden.windows.pending.cbs", "golden.windows.pending.windows_update"):
            out.append(Finding(cid, None, f"SOFTWARE hive not readable: {software_why}"))
    else:
        found = [m for m in CBS_MARKERS if software.find_key(f"{CBS_KEY}\\{m}") is not None]
        out.append(
            Finding(
                "golden.windows.pending.cbs",
                not found,
                f"SOFTWARE\\{CBS_KEY} has {', '.join(found)}: component servicing waits for a "
                "reboot"
                if found
                else f"no {', '.join(CBS_MARKERS)} under SOFTWARE\\{CBS_KEY}",
            )
        )
        wu = software.find_key(WU_REBOOT) is not None
        out.append(
            Finding(
                "golden.windows.pending.windows_update",
                not wu,
                f"SOFTWARE\\{WU_REBOOT} exists: Windows Update waits for a reboot"
                if wu
                else f"no SOFTWARE\\{WU_REBOOT}",
            )
        )
    if guest.exists(PENDING_XML):
        out.append(
            Finding(
                "golden.windows.pending.pending_xml",
                False,
                f"{PENDING_XML} exists: servicing operations wait for the next boot",
            )
        )
    elif not guest.exists("Windows"):
        out.append(
            Finding("golden.windows.pending.pending_xml", None, "no Windows folder to look in")
        )
    else:
        out.append(Finding("golden.windows.pending.pending_xml", True, f"no {PENDING_XML}"))
    return out


def _file_rename(system: Hive | None, cs: str | None, system_why: str) -> Finding:
    cid = "golden.windows.pending.file_rename"
    if system is None or cs is None:
        return Finding(cid, None, f"SYSTEM hive not readable: {system_why}")
    path = f"{cs}\\{SESSION_MANAGER}"
    found = []
    key = system.find_key(path)
    for name in RENAME_VALUES:
        value = key.value(name) if key is not None else None
        sources = rename_sources(value.raw) if value is not None else []
        if sources:
            more = f", ... ({len(sources)} in all)" if len(sources) > 3 else ""
            found.append(f"{name}: {', '.join(sources[:3])}{more}")
    if found:
        return Finding(
            cid, False, f"SYSTEM\\{path} {'; '.join(found)} (moved or deleted at the next boot)"
        )
    return Finding(cid, True, f"no {' or '.join(RENAME_VALUES)} under SYSTEM\\{path}")


def rename_sources(raw: bytes) -> list[str]:
    """The source files of a PendingFileRenameOperations value.

    The value is REG_MULTI_SZ in form only: (source, target) pairs whose target is empty for
    a delete, so it holds empty strings that end a normal multi-string early; it is split
    here from its raw UTF-16 bytes.
    """
    text = raw[: len(raw) - len(raw) % 2].decode("utf-16-le", errors="replace")
    parts = text.split("\0")
    while parts and parts[-1] == "":
        parts.pop()
    return [p for p in parts[0::2] if p]


BCD_IDS = (
    "golden.windows.bcd.device",
    "golden.windows.bcd.path",
    "golden.windows.bcd.testsigning",
    "golden.windows.bcd.nointegritychecks",
    "golden.windows.bcd.bootstatuspolicy",
    "golden.windows.bcd.recoveryenabled",
    "golden.windows.bcd.hypervisorlaunchtype",
)


def bcd_findings(guest: WindowsGuest) -> list[Finding]:
    """The boot manager's default entry: does it boot this Windows, and safely?"""
    store, ids, volume, why = guest_store(guest)
    if store is None:
        return [Finding("golden.windows.bcd.store", None, why)] + [
            Finding(cid, None, "no BCD store read") for cid in BCD_IDS
        ]
    entry = store.default
    e = entry.elements
    desc = f" ({e['description']})" if "description" in e else ""
    out = [
        Finding(
            "golden.windows.bcd.store", True, f"{store.where}: default entry {entry.guid}{desc}"
        ),
        _device_finding(store, ids, volume),
    ]
    path = e.get("path")
    uefi = ids is not None and ids.style == "gpt"
    loader = "winload.efi" if uefi else "winload.exe"
    out.append(
        Finding(
            "golden.windows.bcd.path",
            None if path is None or ids is None else str(path).lower().endswith(loader),
            f"path {path or 'absent'}"
            + (
                ""
                if ids is None
                else f" ({'GPT: UEFI' if uefi else 'MBR: BIOS'} boot loads {loader})"
            ),
        )
    )
    for name, meaning in (
        ("testsigning", "test-signed drivers load"),
        ("nointegritychecks", "driver signatures are not checked"),
    ):
        on = e.get(name) is True
        out.append(
            Finding(
                f"golden.windows.bcd.{name}",
                not on,
                f"{name} {'Yes: ' + meaning if on else 'No' if name in e else 'not set (No)'}",
            )
        )
    for name in ("bootstatuspolicy", "recoveryenabled", "hypervisorlaunchtype"):
        out.append(
            Finding(
                f"golden.windows.bcd.{name}",
                True,
                f"{name} {shown(name, e[name]) if name in e else 'not set'}",
            )
        )
    return out


def _device_finding(store: BcdStore, ids: DiskIds | None, volume: Volume | None) -> Finding:
    """device and osdevice of the default entry against the Windows volume of this disk."""
    cid = "golden.windows.bcd.device"
    devices = {
        n: d
        for n in ("device", "osdevice")
        if isinstance(d := store.default.elements.get(n), BcdDevice)
    }
    if not devices:
        return Finding(cid, None, "the default entry has no device or osdevice")
    shown_all = "; ".join(f"{n} {d}" for n, d in devices.items())
    if ids is None or volume is None:
        return Finding(cid, None, f"{shown_all} (no partition table to compare with)")
    partitions = {n: d for n, d in devices.items() if d.style is not None}
    if not partitions:
        return Finding(cid, None, f"{shown_all}: found by the boot manager at boot, not checked")
    wrong = [n for n, d in partitions.items() if not names_volume(d, ids, volume)]
    where = f"the Windows volume {volume.number} at byte {volume.offset}"
    if wrong:
        return Finding(
            cid,
            False,
            f"{shown_all}: {' and '.join(wrong)} not {where} of this disk "
            f"({_disk_text(ids, volume)}): the entry does not boot this Windows",
        )
    return Finding(cid, True, f"{shown_all}: {where} of this disk")


def _disk_text(ids: DiskIds, volume: Volume) -> str:
    part = ids.partitions.get(volume.offset)
    if ids.style == "gpt":
        return f"GPT disk {{{ids.disk}}}, partition {{{part}}}"
    disk = ids.disk if isinstance(ids.disk, int) else 0
    return f"MBR disk 0x{disk:08x}"


IC_KEY = "Microsoft\\Virtual Machine\\Auto"
CURRENT_VERSION = "Microsoft\\Windows NT\\CurrentVersion"
FIRST_WU_BUILD = 10240  # Windows 10 / Server 2016: integration components by Windows Update


@dataclass(frozen=True)
class IcVersion:
    """The guest's build and the integration components version it last reported."""

    build: int | None
    version: str | None

    @property
    def by_windows_update(self) -> bool | None:
        return None if self.build is None else self.build >= FIRST_WU_BUILD

    def describe(self) -> str:
        reported = (
            f"SOFTWARE\\{IC_KEY} IntegrationServicesVersion={self.version}"
            if self.version
            else f"no IntegrationServicesVersion under SOFTWARE\\{IC_KEY}"
        )
        if self.build is None:
            return f"Windows build unknown; {reported}"
        if self.by_windows_update:
            return (
                f"build {self.build}: the integration components are delivered by Windows "
                f"Update (their version is deprecated from build {FIRST_WU_BUILD} on); {reported}"
            )
        return (
            f"build {self.build} (before Windows 10 / Server 2016): integration components "
            f"{self.version or 'version not recorded'} ({reported}); update them from the host"
        )


def ic_version(software: Hive) -> IcVersion:
    build_value = _value(software, CURRENT_VERSION, "CurrentBuild")
    if build_value is None:
        build_value = _value(software, CURRENT_VERSION, "CurrentBuildNumber")
    try:
        build = int(str(build_value)) if build_value is not None else None
    except ValueError:
        build = None
    version = _value(software, IC_KEY, "IntegrationServicesVersion")
    return IcVersion(build, version if isinstance(version, str) else None)


def ic_version_finding(software: Hive | None, software_why: str) -> Finding:
    """``golden.windows.ic_version`` (info): the IC version where it still means something."""
    cid = "golden.windows.ic_version"
    if software is None:
        return Finding(cid, None, f"SOFTWARE hive not readable: {software_why}")
    return Finding(cid, True, ic_version(software).describe())

"""The Windows boot configuration (BCD store): find it on the disk, read the default entry.

The BCD store is a registry hive, read with our hive reader: ``Objects\\{guid}\\Elements\\
<element type in hex>`` value ``Element``. It lies on the EFI system partition
(``\\EFI\\Microsoft\\Boot\\BCD``, FAT, read through dissect.fat) of a GPT disk, or on the
system partition of an MBR disk (``\\Boot\\BCD``, NTFS). Element types (Microsoft's
BcdLibraryElementTypes, BcdBootMgrElementTypes, BcdOSLoaderElementTypes; Geoff Chappell's
"BCD Elements") and the device layout are cited in ``docs/golden.md``.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import BinaryIO

from offline_ic.errors import PARSER_ERRORS, InputError, OfflineICError
from offline_ic.guest.windows.guest import NtfsWindowsGuest, WindowsGuest
from offline_ic.image.base import DiskImage
from offline_ic.registry import Hive, Key
from offline_ic.volumes import Volume, list_volumes

BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
ESP_TYPE = "EFI system"
ESP_PATH = ("EFI", "Microsoft", "Boot", "BCD")
SYSTEM_PATH = "Boot/BCD"
BCD_LIMIT = 16 << 20  # a real store is tens of KiB; a larger one is not read

# element type -> bcdedit name (the ones the golden profile reads)
DEFAULT_OBJECT = 0x23000003  # BcdBootMgrObject_DefaultObject
ELEMENTS: dict[int, str] = {
    0x11000001: "device",  # BcdLibraryDevice_ApplicationDevice
    0x12000002: "path",  # BcdLibraryString_ApplicationPath
    0x12000004: "description",  # BcdLibraryString_Description
    0x12000005: "locale",  # BcdLibraryString_PreferredLocale
    0x16000009: "recoveryenabled",  # BcdLibraryBoolean_AutoRecoveryEnabled
    0x16000048: "nointegritychecks",  # BcdLibraryBoolean_DisableIntegrityChecks
    0x16000049: "testsigning",  # BcdLibraryBoolean_AllowPrereleaseSignatures
    0x21000001: "osdevice",  # BcdOSLoaderDevice_OSDevice
    0x22000002: "systemroot",  # BcdOSLoaderString_SystemRoot
    0x250000E0: "bootstatuspolicy",  # BcdOSLoaderInteger_BootStatusPolicy
    0x250000F0: "hypervisorlaunchtype",  # BcdOSLoaderInteger_HypervisorLaunchType
}
BOOT_STATUS_POLICY = {0: "DisplayAllFailures", 1: "IgnoreAllFailures"}
HYPERVISOR_LAUNCH_TYPE = {0: "Off", 1: "Auto"}
PARTITION_DEVICE = 6  # the device type of a partition (qualified: disk + partition)
MAX_DEVICE = 4096
_READ_ERRORS: tuple[type[BaseException], ...] = (OfflineICError, OSError, *PARSER_ERRORS)


class BcdError(Exception):
    """Why the store cannot be read (the golden checks turn it into 'not checkable')."""


@dataclass(frozen=True)
class BcdDevice:
    """A device element: a partition named by GPT GUIDs or by MBR offset and signature."""

    kind: int
    style: str | None = None  # "gpt" | "mbr" for a partition device
    partition: str | int | None = None  # GPT partition GUID, or MBR partition offset (bytes)
    disk: str | int | None = None  # GPT disk GUID, or MBR disk signature

    def __str__(self) -> str:
        if self.style == "gpt":
            return f"partition {{{self.partition}}} on GPT disk {{{self.disk}}}"
        if self.style == "mbr" and isinstance(self.partition, int) and isinstance(self.disk, int):
            return f"partition at byte {self.partition} on MBR disk 0x{self.disk:08x}"
        return f"device type {self.kind} (not a partition)"


def parse_device(raw: bytes) -> BcdDevice:
    """A device element's data: 16 bytes of options GUID, then the device: type (u32) at
    0x10; for a partition (type 6) the partition id at 0x20 (GPT GUID, or the MBR offset in
    bytes), the partition style at 0x34 (0 GPT, 1 MBR) and the disk id at 0x38 (GPT GUID,
    or the MBR signature)."""
    if len(raw) < 0x14 or len(raw) > MAX_DEVICE:
        raise BcdError(f"device element of {len(raw)} bytes")
    kind = struct.unpack_from("<I", raw, 0x10)[0]
    if kind != PARTITION_DEVICE:
        return BcdDevice(kind)
    if len(raw) < 0x48:
        raise BcdError(f"partition device element of {len(raw)} bytes (want at least 72)")
    style = struct.unpack_from("<I", raw, 0x34)[0]
    if style == 0:
        return BcdDevice(
            kind,
            "gpt",
            str(uuid.UUID(bytes_le=raw[0x20:0x30])),
            str(uuid.UUID(bytes_le=raw[0x38:0x48])),
        )
    if style == 1:
        offset = struct.unpack_from("<Q", raw, 0x20)[0]
        return BcdDevice(kind, "mbr", offset, struct.unpack_from("<I", raw, 0x38)[0])
    raise BcdError(f"partition device with unknown partition style {style}")


@dataclass
class BcdEntry:
    """One BCD object: its identifier and the elements the golden profile reads."""

    guid: str
    elements: dict[str, object] = field(default_factory=dict)

    def bcdedit(self) -> list[tuple[str, str]]:
        """(name, value) lines like ``bcdedit /enum {default}`` prints them."""
        out = [("identifier", self.guid)]
        for name in ELEMENTS.values():
            if name in self.elements:
                out.append((name, shown(name, self.elements[name])))
        return out


def shown(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if name == "bootstatuspolicy" and isinstance(value, int):
        return BOOT_STATUS_POLICY.get(value, str(value))
    if name == "hypervisorlaunchtype" and isinstance(value, int):
        return HYPERVISOR_LAUNCH_TYPE.get(value, str(value))
    return str(value)


@dataclass
class BcdStore:
    """Where the store was found and its boot manager's default entry."""

    where: str
    default: BcdEntry


def read_store(data: bytes, where: str) -> BcdStore:
    """The default entry of the BCD hive ``data``; BcdError when it cannot be read."""
    try:
        hive = Hive.open(data, name=where)
        target = _string(_element(_elements(hive, BOOTMGR), DEFAULT_OBJECT))
        if target is None:
            raise BcdError(f"{where}: the boot manager has no default entry (element 23000003)")
        entry = BcdEntry(target.lower())
        elements = _elements(hive, target)  # found once: each element is one of its subkeys
        for etype, name in ELEMENTS.items():
            raw = _element(elements, etype)
            if raw is not None:
                entry.elements[name] = _decode(etype, raw)
    except OfflineICError as exc:
        raise BcdError(f"{where}: {exc}") from None
    except PARSER_ERRORS as exc:
        raise BcdError(f"{where}: not a readable BCD store ({type(exc).__name__})") from None
    return BcdStore(where, entry)


def _elements(hive: Hive, guid: str) -> Key | None:
    return hive.find_key(f"Objects\\{guid}\\Elements")


def _element(elements: Key | None, etype: int) -> bytes | None:
    key = elements.subkey(f"{etype:08x}") if elements is not None else None
    value = key.value("Element") if key is not None else None
    return value.raw if value is not None else None


def _string(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw[: len(raw) - len(raw) % 2].decode("utf-16-le", errors="replace").split("\0")[0]


def _decode(etype: int, raw: bytes) -> object:
    """The element data by its format (bits 24-27 of the type): 1 device, 2 string,
    5 integer (u64), 6 boolean (one byte or more, non-zero is true)."""
    fmt = (etype >> 24) & 0xF
    if fmt == 1:
        return parse_device(raw)
    if fmt == 2:
        return _string(raw)
    if fmt == 5:
        if len(raw) < 8:
            raise BcdError(f"integer element {etype:08x} of {len(raw)} bytes")
        return struct.unpack_from("<Q", raw)[0]
    if fmt == 6:
        if not raw:
            raise BcdError(f"boolean element {etype:08x} is empty")
        return any(raw)
    return raw.hex()


@dataclass(frozen=True)
class DiskIds:
    """How a BCD device can name this disk's partitions."""

    style: str  # "gpt" | "mbr"
    disk: str | int  # GPT disk GUID or MBR signature
    partitions: dict[int, str | int]  # volume offset (bytes) -> GPT partition GUID or offset


def disk_ids(image: DiskImage) -> DiskIds | None:
    """The GPT disk and partition GUIDs (or the MBR signature) of ``image``; None when the
    disk has no partition table we can read."""
    sector = image.info().logical_sector_size or 512
    if image.size < 2 * sector:
        return None
    head = image.read(sector, 92)
    if head[:8] == b"EFI PART":
        disk = str(uuid.UUID(bytes_le=head[56:72]))
        lba, count, size = struct.unpack_from("<QII", head, 72)
        if size < 128 or size > 1024 or count > 1024 or (lba + 1) * sector > image.size:
            return None
        table = image.read(lba * sector, count * size)
        parts: dict[int, str | int] = {}
        for i in range(len(table) // size):
            entry = table[i * size : (i + 1) * size]
            if entry[:16] == b"\0" * 16:
                continue
            first = struct.unpack_from("<Q", entry, 32)[0]
            parts[first * sector] = str(uuid.UUID(bytes_le=entry[16:32]))
        return DiskIds("gpt", disk, parts)
    mbr = image.read(0, 512)
    if mbr[510:512] != b"\x55\xaa":
        return None
    signature = struct.unpack_from("<I", mbr, 440)[0]
    offsets: dict[int, str | int] = {}
    for i in range(4):
        lba = struct.unpack_from("<I", mbr, 446 + 16 * i + 8)[0]
        if mbr[446 + 16 * i + 4] and lba:
            offsets[lba * sector] = lba * sector
    return DiskIds("mbr", signature, offsets)


def names_volume(device: BcdDevice, ids: DiskIds, volume: Volume) -> bool:
    """Whether ``device`` is ``volume`` of the disk ``ids`` describes."""
    if device.style != ids.style:
        return False
    want = ids.partitions.get(volume.offset)
    if ids.style == "gpt":
        return (
            isinstance(device.disk, str)
            and device.disk.lower() == str(ids.disk).lower()
            and isinstance(device.partition, str)
            and isinstance(want, str)
            and device.partition.lower() == want.lower()
        )
    return device.disk == ids.disk and device.partition == volume.offset


def find_store(image: DiskImage, windows: Volume | None) -> tuple[bytes, str]:
    """(bytes, where) of the BCD store of ``image``: the EFI system partition's, else
    ``Boot\\BCD`` on an NTFS volume (the system partition of an MBR disk, which may be the
    Windows volume itself). BcdError says why there is none."""

    volumes = list_volumes(image)
    problems = []
    for vol in volumes:
        if vol.type != ESP_TYPE:
            continue
        if vol.filesystem != "fat":
            problems.append(
                f"EFI system partition (volume {vol.number}) is not FAT "
                f"({vol.filesystem or 'no file system found'})"
            )
            continue
        try:
            where = f"volume {vol.number} (EFI system) \\EFI\\Microsoft\\Boot\\BCD"
            return _fat_file(vol.stream(), ESP_PATH), where
        except BcdError as exc:
            problems.append(f"volume {vol.number} (EFI system): {exc}")
    ordered = sorted(volumes, key=lambda v: v is not windows)  # others first: the system partition
    for vol in ordered:
        if vol.filesystem != "ntfs":
            continue
        try:
            data = read_store_file(vol, SYSTEM_PATH)
            if data is not None:
                return data, f"volume {vol.number} (NTFS) \\Boot\\BCD"
        except _READ_ERRORS as exc:
            problems.append(f"volume {vol.number}: {exc}")
    if problems:
        raise BcdError("; ".join(problems))
    raise BcdError("no EFI system partition and no \\Boot\\BCD on an NTFS volume")


def read_store_file(vol: Volume, path: str) -> bytes | None:
    """The file ``path`` ("/" separated) of a FAT or NTFS volume, read as a store is: at
    most BCD_LIMIT bytes (InputError beyond), before a byte past the limit is read; None
    when the volume has no such file or another file system."""
    where = f"volume {vol.number} ({(vol.filesystem or '').upper()})"
    if vol.filesystem == "fat":
        from offline_ic.fs.fat import read_fat_file

        return read_fat_file(vol.stream(), path, where=where, limit=BCD_LIMIT)
    if vol.filesystem != "ntfs":
        return None
    from offline_ic.fs.ntfs import NtfsVolume

    ntfs = NtfsVolume(vol.stream(), f"volume {vol.number}")
    if not ntfs.exists(path):
        return None
    with ntfs.open(path) as fh:
        data: bytes = fh.read(BCD_LIMIT + 1)
    if len(data) > BCD_LIMIT:
        shown = "\\" + path.replace("/", "\\")
        raise InputError(f"{where}: {shown} is larger than {BCD_LIMIT} bytes; not read")
    return data


def _fat_file(stream: BinaryIO, parts: tuple[str, ...]) -> bytes:
    from offline_ic.fs.fat import read_fat_file

    shown = "\\" + "\\".join(parts)
    try:
        data = read_fat_file(stream, "/".join(parts), where=shown, limit=BCD_LIMIT)
    except OfflineICError as exc:
        raise BcdError(str(exc)) from None
    if data is None:
        raise BcdError(f"no {shown} on it")
    return data


def guest_store(
    guest: WindowsGuest,
) -> tuple[BcdStore | None, DiskIds | None, Volume | None, str]:
    """(store, the disk's ids, the Windows volume, why not) for a Windows guest on a disk
    image; a mounted directory or a bare hive has no disk to look on."""
    image = guest.image if isinstance(guest, NtfsWindowsGuest) else None
    volume = guest.volume if isinstance(guest, NtfsWindowsGuest) else None
    if image is None:
        return None, None, None, "the target is not a disk image (no boot partition to read)"
    try:
        data, where = find_store(image, volume)
        return read_store(data, where), disk_ids(image), volume, ""
    except BcdError as exc:
        return None, None, volume, str(exc)

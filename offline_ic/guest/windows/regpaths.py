"""Registry paths as regedit, reg.exe and virt-win-reg spell them, mapped onto hive files.

``HKLM\\SYSTEM\\CurrentControlSet\\Services\\storvsc`` -> the guest file
``Windows/System32/config/SYSTEM`` and the key ``ControlSet001\\Services\\storvsc`` inside it.
Why here: every ``reg`` command and ``reg merge``'s .reg files name keys so; the mapping
(which hive file, which user profile, which control set) is Windows knowledge, one place.

Roots (case-insensitive, short or long spelling): ``HKLM\\SYSTEM|SOFTWARE|SAM|SECURITY|
COMPONENTS|BCD00000000``, ``HKU\\.DEFAULT``, ``HKU\\<SID>`` (and ``HKU\\<SID>_Classes``), and
``HKCU`` with a user name (``--user``). A user's hive is found through ``SOFTWARE\\Microsoft\\
Windows NT\\CurrentVersion\\ProfileList\\<SID>\\ProfileImagePath``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from offline_ic.errors import InputError, NotFoundError, OfflineICError
from offline_ic.guest.windows.bcd import read_store_file
from offline_ic.guest.windows.guest import CONFIG_DIR, WindowsGuest
from offline_ic.registry import Hive
from offline_ic.volumes import Volume

ROOTS = {
    "hklm": "HKLM",
    "hkey_local_machine": "HKLM",
    "hku": "HKU",
    "hkey_users": "HKU",
    "hkcu": "HKCU",
    "hkey_current_user": "HKCU",
}
MACHINE_HIVES = ("SYSTEM", "SOFTWARE", "SAM", "SECURITY", "COMPONENTS")
BCD_KEY = "BCD00000000"
PROFILE_LIST = "Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
LOCAL_SYSTEM_SID = "S-1-5-18"  # its profile hive is DEFAULT (HKU\.DEFAULT)
# where the BCD store lives: on the EFI system partition (FAT) or an NTFS boot partition
BCD_PATHS = ("EFI/Microsoft/Boot/BCD", "Boot/BCD")
ROOT_HELP = (
    "HKLM\\SYSTEM, HKLM\\SOFTWARE, HKLM\\SAM, HKLM\\SECURITY, HKLM\\COMPONENTS, "
    "HKLM\\BCD00000000, HKU\\.DEFAULT, HKU\\<SID>, HKCU (with --user NAME)"
)


@dataclass(frozen=True)
class RegPath:
    """A registry path resolved against a guest: which hive file and which key inside it."""

    root: str  # canonical spelling of the hive's root: "HKLM\\SYSTEM", "HKU\\S-1-5-21-…"
    hive: str  # report name: "SYSTEM", "SOFTWARE", "SAM", "DEFAULT", "BCD", "HKU\\<SID>"
    hive_path: str  # the hive file, relative to its volume
    key: str  # path inside the hive ('' = its root); CurrentControlSet resolved
    writable: bool = True  # False for a BCD on the EFI system partition (FAT)

    @property
    def config_hive(self) -> bool:
        return self.hive_path == f"{CONFIG_DIR}/{self.hive}"

    def full(self, key: str | None = None) -> str:
        inner = self.key if key is None else key
        return self.root + ("\\" + inner if inner else "")


@dataclass(frozen=True)
class ParsedPath:
    """The words of a registry path before a guest is looked at (syntax only)."""

    top: str  # "HKLM" | "HKU" | "HKCU"
    hive_word: str  # "SYSTEM", ".DEFAULT", a SID, "" for HKCU
    rest: str  # below the hive's root


def parse_path(text: str) -> ParsedPath:
    """Split a registry path into root, hive and rest; an unknown root is an InputError."""
    parts = [p for p in text.split("\\") if p]  # "/" is a character of key names (TCP/IP)
    if not parts or parts[0].lower() not in ROOTS:
        raise InputError(f"unknown registry root in '{text}'; known: {ROOT_HELP}")
    top = ROOTS[parts[0].lower()]
    if top == "HKCU":
        return ParsedPath(top, "", "\\".join(parts[1:]))
    if len(parts) < 2:
        raise InputError(f"'{text}': name the hive below {top} (known: {ROOT_HELP})")
    word = parts[1]
    if top == "HKLM" and word.upper() not in (*MACHINE_HIVES, BCD_KEY):
        raise InputError(
            f"unknown hive HKLM\\{word} in '{text}'; known: "
            + ", ".join(f"HKLM\\{h}" for h in (*MACHINE_HIVES, BCD_KEY))
        )
    if top == "HKU" and not (word.lower() == ".default" or word.upper().startswith("S-1-")):
        raise InputError(f"unknown hive HKU\\{word} in '{text}'; known: HKU\\.DEFAULT, HKU\\<SID>")
    return ParsedPath(top, word, "\\".join(parts[2:]))


def resolve_control_set(system: Hive, key: str) -> str:
    """``CurrentControlSet\\…`` as the control set Windows boots; other keys unchanged.

    The one place the choice is made (``services list`` makes the same one).
    """
    from offline_ic.guest.windows.services import current_control_set

    head, _, rest = key.partition("\\")
    if head.lower() != "currentcontrolset":
        return key
    control_set = current_control_set(system)
    return f"{control_set}\\{rest}" if rest else control_set


def resolve(guest: WindowsGuest, text: str, user: str | None = None) -> RegPath:
    """The hive file and key of registry path ``text`` in ``guest``."""
    parsed = parse_path(text)
    if parsed.top == "HKLM":
        name = parsed.hive_word.upper()
        if name == BCD_KEY:
            where, writable = find_bcd(guest)
            return RegPath(f"HKLM\\{BCD_KEY}", "BCD", where, parsed.rest, writable)
        key = parsed.rest
        if name == "SYSTEM":
            key = resolve_control_set(guest.hive("SYSTEM"), key)
        return RegPath(f"HKLM\\{name}", name, f"{CONFIG_DIR}/{name}", key)
    if parsed.top == "HKCU":
        if user is None:
            raise InputError("HKCU needs --user NAME (the profile whose NTUSER.DAT to use)")
        sid, path = profile_of(guest, user)
        return RegPath("HKCU", f"HKU\\{sid}", f"{path}/NTUSER.DAT", parsed.rest)
    word = parsed.hive_word
    if word.lower() == ".default" or word.upper() == LOCAL_SYSTEM_SID:
        root = "HKU\\.DEFAULT" if word.lower() == ".default" else f"HKU\\{LOCAL_SYSTEM_SID}"
        return RegPath(root, "DEFAULT", f"{CONFIG_DIR}/DEFAULT", parsed.rest)
    classes = word.lower().endswith("_classes")
    sid = word[: -len("_classes")] if classes else word
    sid, path = profile_of(guest, sid)
    if classes:
        hive_file = f"{path}/AppData/Local/Microsoft/Windows/UsrClass.dat"
        return RegPath(f"HKU\\{sid}_Classes", f"HKU\\{sid}_Classes", hive_file, parsed.rest)
    return RegPath(f"HKU\\{sid}", f"HKU\\{sid}", f"{path}/NTUSER.DAT", parsed.rest)


def profiles(guest: WindowsGuest) -> dict[str, str]:
    """SID -> profile folder (volume-relative, e.g. ``Users/alice``) from the ProfileList."""
    key = guest.hive("SOFTWARE").find_key(PROFILE_LIST)
    out: dict[str, str] = {}
    for sub in key.subkeys() if key is not None else []:
        value = sub.value("ProfileImagePath")
        if value is not None and isinstance(value.data, str):
            out[sub.name] = guest_relative(value.data)
    return out


def guest_relative(windows_path: str) -> str:
    """``C:\\Users\\alice`` or ``%SystemDrive%\\Users\\alice`` -> ``Users/alice``."""
    path = windows_path.replace("/", "\\")
    low = path.lower()
    for prefix in ("%systemdrive%", "%homedrive%"):
        if low.startswith(prefix):
            path = path[len(prefix) :]
            break
    else:
        if len(path) >= 2 and path[1] == ":":
            path = path[2:]
    path = path.replace("%SystemRoot%", "Windows").replace("%systemroot%", "Windows")
    return "/".join(p for p in path.split("\\") if p)


def profile_of(guest: WindowsGuest, user: str) -> tuple[str, str]:
    """(SID, profile folder) of a user named by SID or by profile folder name."""
    found = profiles(guest)
    for sid, path in found.items():
        if sid.upper() == user.upper() or path.rsplit("/", 1)[-1].lower() == user.lower():
            if not guest.exists(f"{path}/NTUSER.DAT"):
                raise NotFoundError(f"{guest.description}: user {user}: no {path}/NTUSER.DAT")
            return sid, path
    known = ", ".join(p.rsplit("/", 1)[-1] for p in found.values()) or "none"
    raise NotFoundError(
        f"{guest.description}: no profile for user {user!r} in SOFTWARE\\{PROFILE_LIST} "
        f"(profiles: {known})"
    )


def find_bcd(guest: WindowsGuest) -> tuple[str, bool]:
    """Where the BCD store is: on the Windows volume itself (writable like any hive), or
    on another volume of the disk (the EFI system partition: read-only)."""
    for path in BCD_PATHS:
        if guest.exists(path):
            return path, True
    for _volume, path, _data in _other_bcd_volumes(guest):
        return path, False
    raise NotFoundError(
        f"{guest.description}: no BCD store found (looked for {', '.join(BCD_PATHS)} on every "
        "volume of the disk)"
    )


def _other_bcd_volumes(guest: WindowsGuest) -> Iterator[tuple[Volume, str, bytes]]:
    """(volume, path, bytes) of the BCD stores on the other volumes of the guest's disk (the
    bytes are read to know the store is there: kept, not read again)."""
    image = getattr(guest, "image", None)
    own = getattr(guest, "volume", None)
    if image is None:
        return
    from offline_ic.volumes import list_volumes

    for vol in list_volumes(image):
        if own is not None and vol.number == own.number:
            continue
        for path in BCD_PATHS:
            try:
                data = read_store_file(vol, path)
            except OfflineICError:
                continue
            if data is not None:
                yield vol, path, data


def read_hive_bytes(guest: WindowsGuest, where: RegPath) -> tuple[bytes, list[bytes | None]]:
    """The hive file's bytes and its .LOG1/.LOG2 (None when absent)."""
    if not where.writable:  # a BCD on another volume
        for vol, path, data in _other_bcd_volumes(guest):
            if path == where.hive_path:
                logs = [read_store_file(vol, f"{path}.{ext}") for ext in ("LOG1", "LOG2")]
                return data, logs
    if not guest.exists(where.hive_path):
        raise NotFoundError(f"{guest.description}: no {where.root} hive ({where.hive_path})")
    data = guest.open_file(where.hive_path).read()
    logs = [
        guest.open_file(f"{where.hive_path}.{ext}").read()
        if guest.exists(f"{where.hive_path}.{ext}")
        else None
        for ext in ("LOG1", "LOG2")
    ]
    return data, logs


def open_hive(guest: WindowsGuest, where: RegPath) -> Hive:
    """The hive ``where`` names, read-only; a dirty hive shows its logs' recovered view."""
    if where.config_hive and where.hive in ("SYSTEM", "SOFTWARE"):
        return guest.hive(where.hive)  # cached, recovered as every other command sees it
    data, (log1, log2) = read_hive_bytes(guest, where)
    label = f"{guest.description}: {where.hive_path}"
    hive = Hive.open(data, name=label)
    if hive.is_dirty and (log1 is not None or log2 is not None):
        try:
            return Hive.open(data, name=label, log1=log1, log2=log2)
        except OfflineICError:
            return hive
    return hive

"""Creating VHDX files: new base disks (any block/sector size) and differencing children.

Layout of a new file: header area (1 MiB), log (1 MiB), metadata (1 MiB), BAT (rounded
up to 1 MiB), then payload blocks. A new file is written to a temporary name, fsynced and
renamed into place, so a crash never leaves a half-made disk under the target name.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from offline_ic.errors import CorruptImageError, InputError
from offline_ic.image.detect import detect_format
from offline_ic.image.fileio import fsync_dir
from offline_ic.image.vhdx import structures as S
from offline_ic.image.vhdx.image import VhdxReader
from offline_ic.inputs import require_regular
from offline_ic.outputs import check_output

LOG_OFFSET = 1 * S.MiB
LOG_LENGTH = 1 * S.MiB
METADATA_OFFSET = 2 * S.MiB
METADATA_LENGTH = 1 * S.MiB
BAT_OFFSET = 3 * S.MiB
CREATOR = "offline-ic"


def _metadata(
    block_size: int,
    flags: int,
    size: int,
    lss: int,
    pss: int,
    page83: uuid.UUID,
    locator: dict[str, str] | None,
) -> bytes:
    disk = S.MD_IS_REQUIRED | S.MD_IS_VIRTUAL_DISK
    items: list[tuple[uuid.UUID, int, bytes]] = [
        (
            S.FILE_PARAMETERS_GUID,
            S.MD_IS_REQUIRED,
            S.FILE_PARAMETERS.pack(block_size=block_size, flags=flags),
        ),
        (S.VIRTUAL_DISK_SIZE_GUID, disk, S.VIRTUAL_DISK_SIZE.pack(virtual_disk_size=size)),
        (S.PAGE83_GUID, disk, S.PAGE83.pack(page83_data=S.guid_bytes(page83))),
        (S.LOGICAL_SECTOR_GUID, disk, S.SECTOR_SIZE.pack(sector_size=lss)),
        (S.PHYSICAL_SECTOR_GUID, disk, S.SECTOR_SIZE.pack(sector_size=pss)),
    ]
    if locator is not None:
        items.append((S.PARENT_LOCATOR_GUID, S.MD_IS_REQUIRED, S.pack_parent_locator(locator)))
    buf = bytearray(METADATA_LENGTH)
    S.METADATA_HEADER.pack_into(
        buf, 0, signature=S.METADATA_SIG, reserved=0, entry_count=len(items), reserved2=bytes(20)
    )
    pos = S.METADATA_TABLE_SIZE
    for i, (guid, fl, data) in enumerate(items):
        S.METADATA_ENTRY.pack_into(
            buf,
            S.METADATA_HEADER.size + i * S.METADATA_ENTRY.size,
            item_id=S.guid_bytes(guid),
            item_offset=pos,
            length=len(data),
            flags=fl,
            reserved=0,
        )
        buf[pos : pos + len(data)] = data
        pos += -(-len(data) // 8) * 8
    return bytes(buf)


def create_vhdx(
    path: str,
    size: int,
    *,
    block_size: int = 32 * S.MiB,
    logical_sector_size: int = 512,
    physical_sector_size: int = 4096,
    fixed: bool = False,
    parent_locator: dict[str, str] | None = None,
    dry_run: bool = False,
) -> int:
    """Write a new, empty VHDX at ``path`` (refuses to overwrite an existing file); returns
    its file size. ``dry_run``: the same refusals and size, nothing written."""
    check_output(path, can_force=False)  # also a symlink, dangling or not
    bs = block_size
    if bs < S.MiB or bs > 256 * S.MiB or bs & (bs - 1):
        raise InputError(f"{path}: block size must be a power of two between 1 and 256 MiB")
    if logical_sector_size not in (512, 4096) or physical_sector_size not in (512, 4096):
        raise InputError(f"{path}: sector sizes must be 512 or 4096")
    if size <= 0 or size % logical_sector_size or size > 64 * 1024**4:
        raise InputError(f"{path}: invalid virtual size {size}")
    has_parent = parent_locator is not None
    flags = (S.FP_HAS_PARENT if has_parent else 0) | (S.FP_LEAVE_BLOCK_ALLOCATED if fixed else 0)
    n_bat = S.bat_entry_count(size, bs, logical_sector_size, has_parent)
    bat_len = max(S.MiB, -(-(n_bat * S.BAT_ENTRY_SIZE) // S.MiB) * S.MiB)
    end = BAT_OFFSET + bat_len
    cr = S.chunk_ratio(bs, logical_sector_size)
    blocks = -(-size // bs) if fixed else 0
    chunks = n_bat // (cr + 1) if has_parent else 0
    payload = [
        (b + b // cr, S.bat_entry(S.PAYLOAD_BLOCK_FULLY_PRESENT, end + b * bs))
        for b in range(blocks)
    ]
    end += blocks * bs
    # Sector bitmaps are allocated up front (zeros = "read the parent"): libvhdi reads a
    # NOT_PRESENT bitmap entry's bitmap from file offset 0 and so misreads such children.
    bitmaps = [
        (c * (cr + 1) + cr, S.bat_entry(S.SB_BLOCK_PRESENT, end + c * S.SECTOR_BITMAP_BLOCK_SIZE))
        for c in range(chunks)
    ]
    end += chunks * S.SECTOR_BITMAP_BLOCK_SIZE
    bat = sorted(payload + bitmaps)
    if dry_run:
        return end
    page83 = uuid.uuid4()
    hdr = S.Header(0, uuid.uuid4(), uuid.uuid4(), S.ZERO_GUID, 0, 1, LOG_LENGTH, LOG_OFFSET)
    regions = S.pack_region_table(
        [
            S.RegionEntry(S.BAT_GUID, BAT_OFFSET, bat_len, True),
            S.RegionEntry(S.METADATA_GUID, METADATA_OFFSET, METADATA_LENGTH, True),
        ]
    )
    tmp = f"{path}.offline-ic-tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.pwrite(fd, S.pack_file_identifier(CREATOR), 0)
        for i, off in enumerate(S.HEADER_OFFSETS):
            hdr.sequence_number = i
            os.pwrite(fd, hdr.pack(), off)
        for off in S.REGION_TABLE_OFFSETS:
            os.pwrite(fd, regions, off)
        os.pwrite(
            fd,
            _metadata(
                bs, flags, size, logical_sector_size, physical_sector_size, page83, parent_locator
            ),
            METADATA_OFFSET,
        )
        _write_bat(fd, bat, BAT_OFFSET)
        os.ftruncate(fd, end)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path)
    return end


def windows_absolute_path(path: str) -> str:
    r"""``path`` as MS-VHDX's ``absolute_win32_path`` wants it: an extended-length path on a
    drive letter, ``\\?\D:\dir\parent.vhdx``. A Linux tool cannot know the drive letter a
    Windows host mounts the disk's folder on, so the user names it (``--windows-path``);
    InputError for anything but a drive-letter path (``D:\...``, optionally already
    ``\\?\``-prefixed; ``/`` is taken as ``\``)."""
    p = path.replace("/", "\\")
    if p.startswith("\\\\?\\"):
        p = p[4:]
    if not (len(p) >= 4 and p[0].isascii() and p[0].isalpha() and p[1:3] == ":\\"):
        raise InputError(f"{path}: not a Windows path on a drive letter (like D:\\VMs\\base.vhdx)")
    if any(part in ("", ".", "..") for part in p[3:].split("\\")):
        raise InputError(f"{path}: a Windows parent path must be absolute and normalized")
    return "\\\\?\\" + p[0].upper() + p[1:]


def parent_locator(
    parent_path: str, child_path: str, linkage: uuid.UUID, windows_path: str | None = None
) -> dict[str, str]:
    r"""The parent locator of a child at ``child_path`` over the parent at ``parent_path``:
    ``parent_linkage`` (the parent's DataWriteGuid), ``relative_path`` (``.\`` or ``..\``
    form, what Hyper-V tries first: MS-VHDX 2.6.2.6.3 evaluates relative_path, then
    volume_path, then absolute_win32_path), and ``absolute_win32_path`` only when the
    parent's Windows path is given (a Linux path is no Win32 path: written with backslashes
    it is one Hyper-V cannot resolve, and a wrong absolute path can only mislead)."""
    ppath = os.path.abspath(parent_path)
    cdir = os.path.dirname(os.path.abspath(child_path))
    rel_win = os.path.relpath(ppath, cdir).replace("/", "\\")
    if not rel_win.startswith("."):
        rel_win = ".\\" + rel_win
    locator = {"parent_linkage": "{" + str(linkage) + "}", "relative_path": rel_win}
    if windows_path is not None:
        locator["absolute_win32_path"] = windows_absolute_path(windows_path)
    return locator


def create_child(
    parent_path: str,
    child_path: str,
    *,
    size: int | None = None,
    windows_path: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Create ``child_path``: a differencing VHDX over ``parent_path`` (same block/sectors);
    returns what was made (``dry_run``: every refusal, and what would be made; nothing
    written, a parent's pending log left as it is).

    ``size`` makes the child larger than its parent, as Hyper-V's resize of a differencing
    disk does: sectors past the parent's end read as zeros until written. A smaller child
    would hide the parent's tail, which nothing needs, so it is refused. ``windows_path``:
    the parent's path on the Windows host (``D:\\VMs\\base.vhdx``) for
    ``absolute_win32_path``.
    """
    require_regular(parent_path)
    if detect_format(parent_path) != "vhdx":
        raise InputError(f"{parent_path}: a differencing VHDX needs a VHDX parent")
    with VhdxReader(parent_path) as par:
        if par.header.log_guid.int and par.overlay:
            raise CorruptImageError(
                f"{parent_path}: has a pending log; run 'offline-ic recover' on it first"
            )
        locator = parent_locator(parent_path, child_path, par.header.data_write_guid, windows_path)
        if size is not None and size < par.size:
            raise InputError(
                f"{child_path}: a child of {size} bytes would be smaller than its parent "
                f"({par.size} bytes)"
            )
        virtual_size = par.size if size is None else size
        sectors = {
            "block_size": par.block_size,
            "logical_sector_size": par.logical_sector_size,
            "physical_sector_size": par.physical_sector_size,
        }
        file_size = create_vhdx(
            child_path, virtual_size, **sectors, parent_locator=locator, dry_run=dry_run
        )
    return {
        "virtual_size": virtual_size,
        **sectors,
        "parent_locator": locator,
        "file_size": file_size,
    }


def _write_bat(fd: int, entries: list[tuple[int, int]], offset: int) -> None:
    """Write the BAT ``entries`` ((index, entry), ascending) page by page; the rest of the
    BAT is a hole (zeros: NOT_PRESENT). A 64 TiB child's BAT is 512 MiB with one bitmap entry
    in every 32 KiB: building it whole in memory took 1 GB."""
    page, current = bytearray(4096), -1
    for index, entry in entries:
        at = index * S.BAT_ENTRY_SIZE
        if at // 4096 != current:
            if current >= 0:
                os.pwrite(fd, page, offset + current * 4096)
                page[:] = bytes(4096)
            current = at // 4096
        S.BAT_ENTRY.pack_into(page, at % 4096, entry=entry)
    if current >= 0:
        os.pwrite(fd, page, offset + current * 4096)

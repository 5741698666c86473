"""Fuzz targets: one per parser of untrusted bytes, shared by the suite and ``scripts/fuzz``.

Each target has a seed (real bytes from ``testdata/``, built deterministically at run time:
the committed test data is the seed corpus; ``tests/fuzz/corpus/`` holds the mutations that
once crashed, replayed by the suite), "hot" byte ranges where the structures live (mutations
are drawn there most of the time: a cheap structure-aware strategy, atheris does not install
on this Python), and a ``run(data, workdir)`` that must end in the expected errors only.
Anything else (a traceback) is a crash.
"""

from __future__ import annotations

import functools
import gzip
import io
import lzma
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from offline_ic.errors import OfflineICError

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "testdata"
CORPUS = Path(__file__).resolve().parent / "corpus"
SEEDS = Path(__file__).resolve().parent / "seeds"  # small real seeds: scripts/build_fuzz_seeds.py
KiB, MiB = 1 << 10, 1 << 20


@dataclass
class Target:
    name: str
    seed: Callable[[], bytes]
    run: Callable[[bytes, Path], None]
    hot: list[tuple[int, int]]  # [start, end) ranges of the seed holding its structures
    expected: tuple[type[BaseException], ...] = (OfflineICError,)
    splice: bool = False  # coverage-guided input = the hot ranges only (a large seed)
    # (file name, reader of a path, disk size): a spliced image the campaign writes in place
    on_file: tuple[str, Callable[[str], None], int] | None = None
    # makes the input's checksums right (a random change fails a CRC or hash, and the
    # parser stops there); an input whose last byte is odd is left as it is
    seal: Callable[[bytes], bytes] | None = None

    def sealed(self, data: bytes) -> bytes:
        if self.seal is None or not data or data[-1] & 1:
            return data
        return self.seal(data)

    def build(self, data: bytes) -> bytes:
        """The file a coverage-guided input stands for: the input itself, or (``splice``)
        the seed with its hot ranges overwritten by the input, in order (a short input
        leaves the rest of the seed as it is; the file keeps the seed's length)."""
        data = self.sealed(data)
        if not self.splice:
            return data
        buf = bytearray(self.seed())
        pos = 0
        for a, b in self.hot:
            chunk = data[pos : pos + (b - a)]
            buf[a : a + len(chunk)] = chunk
            pos += b - a
        return bytes(buf)

    def run_input(self, data: bytes, workdir: Path) -> None:
        """``run(build(data))``; a spliced image (``on_file``) is the same file, written
        faster: the seed once, then only its hot ranges (an image of tens of MiB)."""
        if self.on_file is None:
            self.run(self.build(data), workdir)
            return
        name, read, disk_size = self.on_file
        data = self.sealed(data)
        seed = self.seed()
        path = workdir / name
        if not path.exists() or path.stat().st_size != max(len(seed), disk_size):
            path.write_bytes(seed)
            os.truncate(path, max(len(seed), disk_size))
        pos = 0
        with open(path, "r+b") as fh:
            for a, b in self.hot:
                chunk = data[pos : pos + (b - a)]
                fh.seek(a)
                fh.write(chunk + seed[a + len(chunk) : b])
                pos += b - a
        read(str(path))

    def hot_bytes(self) -> bytes:
        """The starting input of a coverage-guided run (what ``build`` turns into the seed)."""
        seed = self.seed()
        return b"".join(seed[a:b] for a, b in self.hot) if self.splice else seed


def _unpacked(rel: str) -> bytes:
    path = TESTDATA / rel
    if rel.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if rel.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    return path.read_bytes()


_CACHE: dict[str, bytes] = {}


def _cached(key: str, make: Callable[[], bytes]) -> Callable[[], bytes]:
    def get() -> bytes:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]

    return get


def _write(workdir: Path, name: str, data: bytes) -> str:
    path = workdir / name
    path.write_bytes(data)
    return str(path)


# --- image layer -------------------------------------------------------------------------


def _read_image(path: str) -> None:
    from offline_ic.image import open_image
    from offline_ic.volumes import list_volumes

    with open_image(path) as img:
        img.info().to_dict()
        for off in (0, img.size // 2, max(0, img.size - 65536)):
            img.read(off, min(65536, img.size - off))
        list_volumes(img)


# The 4 KiB sectors of q-dirtylog.vhdx that hold structures (a 448 KiB input was mostly
# zeros): file identifier, both headers, both region tables, the log entry, the first BAT
# sector, the metadata table and its items.
VHDX_HOT = [
    (0, 4 * KiB),
    (64 * KiB, 68 * KiB),
    (128 * KiB, 132 * KiB),
    (192 * KiB, 196 * KiB),
    (256 * KiB, 260 * KiB),
    (1 * MiB, 1 * MiB + 8 * KiB),
    (2 * MiB, 2 * MiB + 4 * KiB),
    (3 * MiB, 3 * MiB + 4 * KiB),
    (3 * MiB + 64 * KiB, 3 * MiB + 68 * KiB),
]


def seal_vhdx(data: bytes) -> bytes:
    """The CRC-32C of both headers (4 KiB each), both region tables (64 KiB: the rest of
    the seed's table is zeros) and the log entry, computed over the input's bytes."""
    buf = bytearray(data)
    starts = [0]
    for a, b in VHDX_HOT:
        starts.append(starts[-1] + b - a)

    def fix(i: int, covered: int, length: int | None = None) -> None:
        at = starts[i]
        if at + 8 > len(buf):
            return
        own = starts[i + 1] - at
        size = covered if length is None else length
        if size < 8 or (length is not None and size > own):  # an entry past its range
            return
        struct.pack_into("<I", buf, at + 4, 0)
        struct.pack_into("<I", buf, at + 4, _crc_padded(bytes(buf[at : at + min(own, size)]), size))

    for i in (1, 2):
        fix(i, 4 * KiB)
    for i in (3, 4):
        fix(i, 64 * KiB)
    log = starts[5]
    if log + 12 <= len(buf) and buf[log : log + 4] == b"loge":
        (entry,) = struct.unpack_from("<I", buf, log + 8)
        fix(5, 0, entry)
    return bytes(buf)


@functools.lru_cache(maxsize=64)
def _crc_padded(chunk: bytes, size: int) -> int:
    """CRC-32C of ``chunk`` padded with zeros to ``size`` (most inputs change one range:
    the others' checksums are the seed's, 1 ms each for a 64 KiB region table)."""
    from offline_ic.image.crc32c import crc32c

    return crc32c(chunk.ljust(size, b"\0"))


def run_vhdx(data: bytes, workdir: Path) -> None:
    _read_image(_write(workdir, "fuzz.vhdx", data))


def run_vhd(data: bytes, workdir: Path) -> None:
    _read_image(_write(workdir, "fuzz.vhd", data))


BSD_LABEL_AT = 2049 * 512  # sector 1 of the mbr seed's FreeBSD slice


def _mbr_seed() -> bytes:
    """A 4 MiB raw disk: MBR with two partitions, the first a FreeBSD slice holding the BSD
    disklabel fdisk writes (tests/fuzz/seeds/bsd-label.bin: dissect reads it, and so the
    label is fuzzed too), the second of type NTFS."""
    disk = bytearray(4 * MiB)
    entries = [(0xA5, 2048, 2048), (0x07, 4096, 4096)]
    for i, (kind, start, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", disk, 446 + 16 * i, 0, kind, start, count)
    disk[510:512] = b"\x55\xaa"
    disk[BSD_LABEL_AT : BSD_LABEL_AT + 512] = (SEEDS / "bsd-label.bin").read_bytes()
    return bytes(disk)


def _gpt_seed() -> bytes:
    """Protective MBR, GPT header and a 4-entry table made by sfdisk (scripts/
    build_fuzz_seeds.py): a 128-entry table had dissect read 128 entries per input."""
    return (SEEDS / "gpt-4-entries.bin").read_bytes()


def run_volumes(data: bytes, workdir: Path) -> None:
    path = _write(workdir, "fuzz.raw", data)
    os.truncate(path, max(len(data), DISK_SIZE))  # the rest of the disk: sparse zeros
    _read_image(path)


DISK_SIZE = 64 * MiB  # the disk the GPT seed was made for (its partitions fit in it)


# --- NTFS: the hive lookup ----------------------------------------------------------------


def _ntfs_volume() -> bytes:
    """A 3 MiB NTFS made by mkntfs holding a small real hive at the SYSTEM hive's path
    (scripts/build_fuzz_seeds.py): the 64 MiB test disk made a run copy 64 MiB per input."""
    return lzma.decompress((SEEDS / "ntfs-hive.raw.xz").read_bytes())


NTFS_HIVE_PATH = "Windows/System32/config/SYSTEM"
# The MFT records fuzzed: the hive's (its data runs, sizes, flags) and the Windows folder's
# (its index and attributes: the path is walked through it, links refused there).
NTFS_RECORDS = (NTFS_HIVE_PATH, "Windows")
_NTFS_PLACES: list[tuple[int, int]] = []


def _ntfs_places() -> list[tuple[int, int]]:
    """(offset, size) in the volume of each record of NTFS_RECORDS (found by dissect once)."""
    if not _NTFS_PLACES:
        from dissect.ntfs import NTFS
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        volume = _cached("ntfs-volume", _ntfs_volume)()
        fs = NTFS(io.BytesIO(volume))
        (lcn, _n), *_ = fs.mft.get(0).attributes[ATTRIBUTE_TYPE_CODE.DATA][0].dataruns()
        (per,) = struct.unpack_from("<b", volume, 0x40)
        size = 1 << -per if per < 0 else per * fs.cluster_size
        for path in NTFS_RECORDS:
            segment = fs.mft.get(path).segment
            _NTFS_PLACES.append((lcn * fs.cluster_size + segment * size, size))
    return _NTFS_PLACES


def _ntfs_seed() -> bytes:
    volume = _cached("ntfs-volume", _ntfs_volume)()
    return b"".join(volume[off : off + size] for off, size in _ntfs_places())


def run_ntfs_hive(data: bytes, workdir: Path) -> None:
    from offline_ic.fs.ntfs import NtfsVolume
    from offline_ic.registry import Hive

    buf = bytearray(_cached("ntfs-volume", _ntfs_volume)())
    pos = 0
    for off, size in _ntfs_places():
        buf[off : off + size] = data[pos : pos + size].ljust(size, b"\0")
        pos += size
    ntfs = NtfsVolume(io.BytesIO(buf), "fuzz NTFS")
    ntfs.file_info(NTFS_HIVE_PATH)
    with ntfs.open(NTFS_HIVE_PATH) as fh:
        hive = Hive.open(fh, name="SYSTEM")
        hive.find_key(r"SAM\Domains\Account\Users")


# --- registry -----------------------------------------------------------------------------


def seal_base_block(data: bytes) -> bytes:
    """The hive's base block checksum over the input's first 512 bytes (a changed byte there
    made the hive refuse to open)."""
    from offline_ic.registry import structs as S
    from offline_ic.registry.checksum import base_block_checksum

    if len(data) < S.BASE_HEADER_SIZE:
        return data
    buf = bytearray(data)
    where = S.BASE.offset("checksum")
    struct.pack_into("<I", buf, where, base_block_checksum(bytes(buf[: S.BASE_HEADER_SIZE])))
    return bytes(buf)


def run_regf(data: bytes, workdir: Path) -> None:
    from offline_ic.registry import Hive

    hive = Hive.open(data, name="fuzz")
    for n, key in enumerate(hive.walk()):
        for value in key.values():
            _ = value.data
        if n > 2000:
            break


LOG1_ENTRIES_END = 28672  # base block + the real LOG1's first two HvLE entries (of 3 MiB)
LOG2_ENTRIES_END = 512  # the real LOG2's base block: hashing its entries cost each input 3 ms


def _log_seed() -> bytes:
    return _unpacked("hives/regipy_SYSTEM_B.LOG1.xz")[:LOG1_ENTRIES_END]


def seal_log(data: bytes) -> bytes:
    """``data`` with the base block checksum and each HvLE entry's two Marvin32 hashes made
    right, so mutations reach the entry and page parsing behind them."""
    from offline_ic.registry import structs as S
    from offline_ic.registry.recovery import HVLE_HASH2_LEN

    if len(data) < S.BASE_HEADER_SIZE:
        return data
    buf = bytearray(seal_base_block(data))
    off = S.BASE_HEADER_SIZE
    h1, h2 = S.HVLE.offset("hash1"), S.HVLE.offset("hash2")
    while off + S.HVLE.size <= len(buf) and buf[off : off + 4] == b"HvLE":
        (size,) = struct.unpack_from("<I", buf, off + 4)
        if size < S.HVLE.size or off + size > len(buf):
            break
        struct.pack_into("<Q", buf, off + h1, _marvin32(bytes(buf[off + S.HVLE.size : off + size])))
        struct.pack_into("<Q", buf, off + h2, _marvin32(bytes(buf[off : off + HVLE_HASH2_LEN])))
        off += max(size, 512)
    return bytes(buf)


@functools.lru_cache(maxsize=64)
def _marvin32(data: bytes) -> int:
    """Marvin32 of an entry: most inputs leave most entries as the seed has them."""
    from offline_ic.registry.marvin import marvin32

    return marvin32(data)


def run_regf_log(data: bytes, workdir: Path) -> None:
    from offline_ic.registry.recovery import recover_bytes

    primary = _cached("system-b", lambda: _unpacked("hives/regipy_SYSTEM_B.xz"))()
    log2 = _cached(
        "system-b-log2", lambda: _unpacked("hives/regipy_SYSTEM_B.LOG2.xz")[:LOG2_ENTRIES_END]
    )()
    recover_bytes(primary, data, log2, name="fuzz")


# --- operator inputs: .reg files, change files, policies, --from lists -------------------

_REG_SEED = (
    "Windows Registry Editor Version 5.00\r\n\r\n"
    "[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\vmicvss]\r\n"
    '"Start"=dword:00000003\r\n'
    '"DisplayName"="Hyper-V \\"Volume\\" Shadow Copy"\r\n'
    '"Tags"=hex(7):41,00,00,00,42,00,00,00,00,00\r\n'
    '"Path"=hex(2):25,00,53,00,00,00\r\n'
    '"Blob"=hex:00,01,02,03,\\\r\n  04,05\r\n'
    '"Big"=hex(b):01,00,00,00,00,00,00,00\r\n'
    '"Old"=-\r\n'
    '@="default"\r\n\r\n'
    "[-HKEY_LOCAL_MACHINE\\SOFTWARE\\Gone]\r\n"
    "[HKEY_USERS\\.DEFAULT\\Software\\X]\r\n"
    '"A"=hex(0):\r\n'
)


def run_reg(data: bytes, workdir: Path) -> None:
    from offline_ic.registry.regfile import decode_reg_bytes, parse_reg_file
    from offline_ic.workflows.reg import hive_file_changes, precheck

    ops = parse_reg_file(decode_reg_bytes(data, "fuzz.reg"), "fuzz.reg")
    precheck(ops)
    hive_file_changes([], [op for op in ops if "\\" in op.key], True)


_CHANGE_SEED = b"""[services]
all = "manual"
time-sync = "disabled"
vmicvss = 3

[kvp.set.guest]
BuildPipeline = "packer-2026.11"

[kvp.delete]
parameters = ["HostName"]

[registry.SYSTEM."CurrentControlSet\\\\Control"]
WaitToKillServiceTimeout = "5000"
Number = 12
"""


def run_changefile(data: bytes, workdir: Path) -> None:
    from offline_ic.guest.windows.changefile import load_change_file

    load_change_file(_write(workdir, "changes.toml", data))


_POLICY_SEED = b"""[checks]
fail = ["windows.fast_startup"]
warn = ["linux.daemon.*"]
skip = "windows.ic.vmicrdv"
"""


def run_policy(data: bytes, workdir: Path) -> None:
    from offline_ic.checks.policy import load_policy

    load_policy(_write(workdir, "gate.toml", data)).unmatched(["windows.fast_startup"])


_FROM_SEED = b"# fleet\nimages/a.vhdx\n\n  images/b c.vhdx\r\n-\n#x\n/vm/folder\n"


def run_fromlist(data: bytes, workdir: Path) -> None:
    from offline_ic.fleet import read_target_list

    for line in read_target_list(_write(workdir, "targets.txt", data)):
        assert "\n" not in line, line


def _xml_seed() -> bytes:
    return (TESTDATA / "host" / "2012r2-gen2-defaults.xml").read_bytes()


def run_xmlconfig(data: bytes, workdir: Path) -> None:
    from offline_ic.host.xmlconfig import is_xml_config, read_xml_config

    path = _write(workdir, "vm.xml", data)
    if is_xml_config(path):
        read_xml_config(path).to_dict()


# --- Linux initramfs, Hyper-V vmcx --------------------------------------------------------


def _cpio_seed() -> bytes:
    """A gzip initramfs (newc) with a few files, made here: header fields are the target."""

    def member(name: str, body: bytes, mode: int = 0o100644) -> bytes:
        fields = [0, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(name) + 1, 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        head += b"\0" * ((4 - len(head) % 4) % 4)
        return head + body + b"\0" * ((4 - len(body) % 4) % 4)

    archive = b"".join(
        [
            member("etc", b"", 0o40755),
            member("etc/modprobe.d/x.conf", b"blacklist hv_utils\n"),
            member("usr/lib/modules/6.1.0/kernel/drivers/hv/hv_vmbus.ko", b"\0" * 64),
            member("TRAILER!!!", b""),
        ]
    )
    early = member("kernel/x86/microcode/GenuineIntel.bin", b"\x01" * 32) + member(
        "TRAILER!!!", b""
    )
    return early + gzip.compress(archive, mtime=0)


def run_cpio(data: bytes, workdir: Path) -> None:
    from offline_ic.guest.linux.cpio import iter_initramfs

    for _entry in iter_initramfs(io.BytesIO(data), keep=lambda n, s: True, cap=64 * MiB):
        pass


def _ext4_volume() -> bytes:
    """A 256 KiB ext4 made by mke2fs -d from a tiny Linux tree (scripts/build_fuzz_seeds.py):
    superblock, group descriptors, bitmaps, directories, files and inode table are its first
    43 KiB, the hot range."""
    return lzma.decompress((SEEDS / "ext4-guest.img.xz").read_bytes())


EXT4_HOT = [(1024, 43 * KiB)]


def _xfs_volume() -> bytes:
    """The same tree on a one-AG v5 xfs made by mkfs.xfs -p, cut after its last used block
    (scripts/build_fuzz_seeds.py)."""
    return lzma.decompress((SEEDS / "xfs-guest.img.xz").read_bytes())


# superblock, AGF, AGI, AGFL and the free-space and inode btree roots; then (after the
# internal log) directory and file blocks, and the root's 64-inode chunk
XFS_HOT = [(0, 8 * KiB), (0x374800, 0x376000), (0x378000, 0x380000)]


def _btrfs_volume() -> bytes:
    """The same tree on a mixed-block-group btrfs made by mkfs.btrfs --rootdir, cut after
    its last used block (scripts/build_fuzz_seeds.py)."""
    return lzma.decompress((SEEDS / "btrfs-guest.img.xz").read_bytes())


# the superblock (its chunk array maps the system chunk); the chunk and device trees at
# 1 MiB; the root, extent, file-system and checksum trees and the file data at 5 MiB
# (dissect.btrfs does not verify tree block checksums: nothing to seal)
BTRFS_HOT = [(0x10000, 0x11000), (0x100000, 0x10B000), (0x500000, 0x50F000)]


def _lvm_disk() -> bytes:
    """A whole-disk LVM2 PV written by lvm2's own tools, the ext4 seed in its root LV, cut
    after that (scripts/build_fuzz_seeds.py)."""
    return lzma.decompress((SEEDS / "lvm-guest.img.xz").read_bytes())


# the PV label, then the metadata area: its header and the circular buffer of metadata
# texts lvm2 wrote (one per change: the newest is the one the header points at)
LVM_HOT = [(0x200, 0x400), (0x1000, 0x2400)]
LVM_DISK_SIZE = 16 * MiB  # what pvcreate saw: the volume group's extents end inside it


def _read_lvm_guest(path: str) -> None:
    """What every Linux check does first: find the root through the volume group."""
    from offline_ic.guest.linux.guest import open_linux_guest
    from offline_ic.image import open_image

    with open_image(path) as img:
        guest = open_linux_guest(img)
        if guest is not None:
            guest.distro  # noqa: B018 - reads os-release through the LV


def run_lvm(data: bytes, workdir: Path) -> None:
    path = _write(workdir, "fuzz-lvm.raw", data)
    os.truncate(path, max(len(data), LVM_DISK_SIZE))
    _read_lvm_guest(path)


def run_linux_volume(data: bytes, workdir: Path) -> None:
    """What the Linux checks do with a guest file system: sniffed by our magic scan, opened
    by dissect as that file system (one it cannot open is no candidate), then our path walk
    reads the files and lists the folders."""
    from offline_ic.fs.dissect_open import open_dissect_filesystem
    from offline_ic.guest.linux.fs import GuestFS
    from offline_ic.guest.linux.guest import LINUX_FILESYSTEMS
    from offline_ic.volumes import sniff_stream

    stream = io.BytesIO(data)
    kind = sniff_stream(stream, len(data))
    if kind not in LINUX_FILESYSTEMS:
        return
    try:
        fs = open_dissect_filesystem(stream, kind, f"fuzz {kind}")
    except Exception:  # noqa: BLE001 - open_linux_guest skips such a volume the same way
        return
    guest = GuestFS(fs, f"fuzz {kind}")
    guest.try_text("/etc/os-release")
    guest.try_text("/etc/modules")
    for name in guest.listdir("/etc/modprobe.d"):
        guest.try_text(f"/etc/modprobe.d/{name}")
    for path in guest.walk_files("/usr/lib/modules"):
        guest.size(path)


def _linux_volume_target(
    name: str, seed: Callable[[], bytes], hot: list[tuple[int, int]]
) -> Target:
    """A Linux guest file system, fuzzed through its metadata spliced into a real volume."""
    return Target(
        name,
        _cached(name, seed),
        run_linux_volume,
        hot,
        (_guest_path_error(), OfflineICError),
        splice=True,
    )


def _vmcx_seed() -> bytes:
    path = REPO.parent / "shared" / "testdata-real" / "vmcx" / "test.vmcx"
    return path.read_bytes() if path.exists() else b""


def run_vmcx(data: bytes, workdir: Path) -> None:
    from offline_ic.host.vmcx import read_vmcx

    read_vmcx(_write(workdir, "fuzz.vmcx", data))


# --- Windows boot configuration: the BCD store and the ESP it lies on --------------------


def run_bcd(data: bytes, workdir: Path) -> None:
    """The golden profile's reading of a store: the default entry decoded as bcdedit shows
    it, and the boot manager's own device (a GPT partition in the real store: the
    partition-device layout the default entry's devices are judged by)."""
    from offline_ic.guest.windows.bcd import BOOTMGR, parse_device, read_store
    from offline_ic.registry import Hive

    store = read_store(data, "fuzz")
    store.default.bcdedit()
    key = Hive.open(data, name="fuzz").find_key(f"Objects\\{BOOTMGR}\\Elements\\11000001")
    value = key.value("Element") if key is not None else None
    if value is not None:
        str(parse_device(value.raw))


def _esp_volume() -> bytes:
    """A 256 KiB FAT12 ESP (mkfs.fat, mtools) holding the real BCD store at its place
    (scripts/build_fuzz_seeds.py): boot sector, FATs, root folder and the three folders
    down to the store are its first 4.5 KiB, the hot range."""
    return lzma.decompress((SEEDS / "esp-bcd.fat.xz").read_bytes())


def run_esp(data: bytes, workdir: Path) -> None:
    """The store's bytes read off the ESP as ``find_store`` does (a bounded FAT reading); what
    the store holds is the bcd target's."""
    from offline_ic.fs.fat import read_fat_file
    from offline_ic.guest.windows.bcd import BCD_LIMIT, ESP_PATH

    read_fat_file(io.BytesIO(data), "/".join(ESP_PATH), where="fuzz ESP", limit=BCD_LIMIT)


def _fat_tree_volume() -> bytes:
    """A 256 KiB FAT12 volume with a tree to browse: nested folders, long names, an empty
    file (scripts/build_fuzz_seeds.py); the FATs and every folder are its first 7 KiB."""
    return lzma.decompress((SEEDS / "fat-tree.fat.xz").read_bytes())


MAX_BROWSED = 512  # entries a fat input may list: a damaged tree can be wide or cyclic


def run_fat_browse(data: bytes, workdir: Path) -> None:
    """What `ls -R`, `cat` and `cp` do with a FAT volume (an ESP, /boot/efi): sniffed, opened
    through dissect.target with our bounded chains (``Browser.tree``), every folder listed
    with each entry's stat and every file read, through the browse tree."""
    from offline_ic.fs.dissect_open import open_dissect_filesystem
    from offline_ic.fs.tree import DIR, FILE
    from offline_ic.guest.linux.fs import GuestFS
    from offline_ic.volumes import sniff_stream
    from offline_ic.workflows.browse import PosixTree

    stream = io.BytesIO(data)
    if sniff_stream(stream, len(data)) != "fat":
        return
    fs = open_dissect_filesystem(stream, "fat", "fuzz FAT")
    tree = PosixTree(GuestFS(fs, "fuzz FAT"), "fuzz FAT", posix=False)
    folders, seen = ["/"], 0
    while folders and seen < MAX_BROWSED:
        folder = folders.pop()
        for st in tree.listdir(folder):
            seen += 1
            path = folder.rstrip("/") + "/" + st.name
            if st.kind == DIR and path.count("/") < 16:
                folders.append(path)
            elif st.kind == FILE:
                with tree.open(path) as fh:
                    fh.read(1 << 20)


def _guest_path_error() -> type[BaseException]:
    from offline_ic.guest.linux.fs import GuestPathError

    return GuestPathError


def _bcd_error() -> tuple[type[BaseException], ...]:
    from offline_ic.guest.windows.bcd import BcdError

    return (BcdError, OfflineICError)


def _initramfs_error() -> tuple[type[BaseException], ...]:
    from offline_ic.guest.linux.cpio import InitramfsError

    return (InitramfsError, OfflineICError)


def targets() -> dict[str, Target]:
    """Every target by name (the seeds are built lazily, once per process)."""
    return {
        "vhdx": Target(
            "vhdx",
            _cached("vhdx", lambda: _unpacked("images/q-dirtylog.vhdx.gz")),
            run_vhdx,
            VHDX_HOT,
            splice=True,
            on_file=("fuzz.vhdx", _read_image, 0),
            seal=seal_vhdx,
        ),
        "vhd": Target(
            "vhd",
            _cached("vhd", lambda: _vhd_seed()),
            run_vhd,
            VHD_HOT,
            splice=True,
            on_file=("fuzz.vhd", _read_image, 0),
            seal=seal_vhd,
        ),
        "gpt": Target("gpt", _cached("gpt", _gpt_seed), run_volumes, [(0, 3 * 512)]),
        "mbr": Target(
            "mbr",
            _cached("mbr", _mbr_seed),
            run_volumes,
            [(0, 512), (BSD_LABEL_AT, BSD_LABEL_AT + 512)],
            splice=True,
            on_file=("fuzz.raw", _read_image, DISK_SIZE),
        ),
        "ntfs_hive": Target("ntfs_hive", _ntfs_seed, run_ntfs_hive, [(0, 2048)]),
        "regf": Target(
            "regf",
            _cached("regf", lambda: _unpacked("hives/regipy_SAM.xz")),
            run_regf,
            [(0, 512), (4096, 12 * KiB)],
            splice=True,
            seal=seal_base_block,
        ),
        "regf_log": Target(
            "regf_log",
            _cached("log", _log_seed),
            run_regf_log,
            [(0, LOG1_ENTRIES_END)],
            seal=seal_log,
        ),
        "cpio": Target(
            "cpio", _cached("cpio", _cpio_seed), run_cpio, [(0, 400)], _initramfs_error()
        ),
        "vmcx": Target("vmcx", _cached("vmcx", _vmcx_seed), run_vmcx, [(0, 64 * KiB)], splice=True),
        "reg": Target("reg", lambda: _REG_SEED.encode("utf-16"), run_reg, [(0, 1 * KiB)]),
        "changefile": Target("changefile", lambda: _CHANGE_SEED, run_changefile, [(0, KiB)]),
        "policy": Target("policy", lambda: _POLICY_SEED, run_policy, [(0, 256)]),
        "fromlist": Target("fromlist", lambda: _FROM_SEED, run_fromlist, [(0, 64)]),
        "xmlconfig": Target("xmlconfig", _xml_seed, run_xmlconfig, [(0, 4 * KiB)]),
        "ext4": _linux_volume_target("ext4", _ext4_volume, EXT4_HOT),
        "xfs": _linux_volume_target("xfs", _xfs_volume, XFS_HOT),
        "btrfs": _linux_volume_target("btrfs", _btrfs_volume, BTRFS_HOT),
        "lvm": Target(
            "lvm",
            _cached("lvm", _lvm_disk),
            run_lvm,
            LVM_HOT,
            (_guest_path_error(), OfflineICError),
            splice=True,
            on_file=("fuzz-lvm.raw", _read_lvm_guest, LVM_DISK_SIZE),
        ),
        "bcd": Target(
            "bcd",
            _cached("bcd", lambda: _unpacked("hives/windeploy_BCD-efi.xz")),
            run_bcd,
            [(0, 12 * KiB)],
            _bcd_error(),
            seal=seal_base_block,
        ),
        "esp": Target(
            "esp",
            _cached("esp", _esp_volume),
            run_esp,
            [(0, 4608)],
            _bcd_error(),
            splice=True,
        ),
        "fat": Target(
            "fat", _cached("fat", _fat_tree_volume), run_fat_browse, [(0, 7 * KiB)], splice=True
        ),
    }


VHD_FOOTER_AT = 41955840 - 512  # q-dyn.vhd's footer: the one read first (the file's end)
# footer copy, dynamic header, start of the BAT; the footer at the end
VHD_HOT = [(0, 4 * KiB), (VHD_FOOTER_AT, VHD_FOOTER_AT + 512)]


def seal_vhd(data: bytes) -> bytes:
    """The checksums of the footer copy (0), the dynamic header (512) and the footer (the
    last 512 bytes of the input), computed over the input's bytes."""
    from offline_ic.image.vhd.structures import (
        DYN_HDR_SIZE,
        DYN_HEADER,
        FOOTER,
        FOOTER_SIZE,
        vhd_checksum,
    )

    buf = bytearray(data)
    end = 4 * KiB + FOOTER_SIZE
    places = [(0, FOOTER_SIZE, FOOTER), (FOOTER_SIZE, DYN_HDR_SIZE, DYN_HEADER)]
    places.append((4 * KiB, FOOTER_SIZE, FOOTER))
    for at, size, layout in places:
        if at + size <= min(len(buf), end):
            where = layout.offset("checksum")
            struct.pack_into(">I", buf, at + where, vhd_checksum(buf[at : at + size], where))
    return bytes(buf)


def _vhd_seed() -> bytes:
    """q-dyn.vhd (qemu-made dynamic VHD): footer copy, dynamic header and BAT up front."""
    return _unpacked("images/q-dyn.vhd.gz")


def mutate(seed: bytes, patches: list[tuple[int, bytes]]) -> bytes:
    """``seed`` with each (offset, bytes) written over it (clipped to its end); an offset
    past the end truncates the input there instead (short files are inputs too)."""
    buf = bytearray(seed)
    for off, chunk in patches:
        if off >= len(buf):
            del buf[max(0, off % max(1, len(buf))) :]
            continue
        buf[off : off + len(chunk)] = chunk[: len(buf) - off]
    return bytes(buf)


def run_case(target: Target, data: bytes, workdir: Path) -> BaseException | None:
    """Run one input; returns the unexpected exception (a crash) or None."""
    os.makedirs(workdir, exist_ok=True)
    try:
        target.run(data, workdir)
    except target.expected:
        return None
    except Exception as exc:  # noqa: BLE001 - a crash is what we look for
        return exc
    return None


def diff_patches(seed: bytes, data: bytes) -> list[tuple[int, bytes]]:
    """(offset, bytes) runs where ``data`` (as long as ``seed``) differs from it; runs less
    than 8 bytes apart are joined (a short, readable reproducer)."""
    patches: list[tuple[int, bytes]] = []
    i, n = 0, len(seed)
    while i < n:
        if seed[i] == data[i]:
            i += 1
            continue
        start = end = i
        while i < n and i - end < 8:
            if seed[i] != data[i]:
                end = i + 1
            i += 1
        patches.append((start, data[start:end]))
        i = end
    return patches

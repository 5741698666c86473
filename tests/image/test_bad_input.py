"""Damaged images end in one clear line (CorruptImageError / NotFoundError), never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imgutil import IMAGES, fresh_copy

from offline_ic.errors import CorruptImageError, InputError, NotFoundError, OfflineICError
from offline_ic.image import open_image
from offline_ic.image.vhd.structures import DYN_HEADER, FOOTER_SIZE
from offline_ic.image.vhdx import structures as S

KiB, MiB = 1024, 1 << 20


def _poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read_all(path: Path) -> None:
    with open_image(str(path)) as img:
        for off in range(0, img.size, 8 * MiB):
            img.read(off, min(8 * MiB, img.size - off))


def _expect(path: Path, cls: type[Exception], fragment: str) -> str:
    with pytest.raises(cls) as ei:
        _read_all(path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert path.name in msg
    assert fragment in msg, msg
    return msg


@pytest.fixture
def vhdx(tmp_path) -> Path:
    return fresh_copy(IMAGES / "q-dyn-2m.vhdx.gz", tmp_path, "disk.vhdx")


def test_truncated_inside_header_area(vhdx):
    with open(vhdx, "r+b") as f:
        f.truncate(500 * KiB)
    _expect(vhdx, CorruptImageError, "truncated")


def test_truncated_before_bat(vhdx):
    with open(vhdx, "r+b") as f:
        f.truncate(2 * MiB)
    _expect(vhdx, CorruptImageError, "past the end of the file")


def test_truncated_payload(vhdx):
    with open(vhdx, "r+b") as f:
        f.truncate(f.seek(0, 2) - 3 * MiB)
    _expect(vhdx, CorruptImageError, "past the end of the file")


def test_both_header_crcs_bad(vhdx):
    _poke(vhdx, 64 * KiB + 100, b"\xff")
    _poke(vhdx, 128 * KiB + 100, b"\xff")
    _expect(vhdx, CorruptImageError, "both VHDX headers fail")


def test_one_header_bad_still_reads(vhdx, pattern_bytes):
    _poke(vhdx, 64 * KiB + 100, b"\xff")
    with open_image(str(vhdx)) as img:
        assert img.read(0, 1 * MiB) == pattern_bytes[: 1 * MiB]


def test_both_region_tables_bad(vhdx):
    _poke(vhdx, 192 * KiB + 40, b"\x01")
    _poke(vhdx, 256 * KiB + 40, b"\x01")
    _expect(vhdx, CorruptImageError, "region tables fail")


def test_first_region_table_bad_uses_second(vhdx, pattern_bytes):
    _poke(vhdx, 192 * KiB + 40, b"\x01")
    with open_image(str(vhdx)) as img:
        assert img.read(5 * MiB, 4096) == pattern_bytes[5 * MiB : 5 * MiB + 4096]


def _bat_offset(path: Path) -> int:
    with open_image(str(path)) as img:
        return img.bat_region.file_offset


def test_bat_entry_past_eof(vhdx):
    _poke(vhdx, _bat_offset(vhdx), S.BAT_ENTRY.pack(entry=(10_000 << 20) | 6))
    _expect(vhdx, CorruptImageError, "past the end of the file")


def test_bat_entry_invalid_state(vhdx):
    _poke(vhdx, _bat_offset(vhdx) + S.BAT_ENTRY_SIZE, S.BAT_ENTRY.pack(entry=5))
    _expect(vhdx, CorruptImageError, "invalid state")


def test_partially_present_without_parent(vhdx):
    with open(vhdx, "rb") as f:
        f.seek(_bat_offset(vhdx))
        e = S.BAT_ENTRY.parse(f.read(S.BAT_ENTRY_SIZE)).entry
    _poke(vhdx, _bat_offset(vhdx), S.BAT_ENTRY.pack(entry=(e & ~7) | 7))
    _expect(vhdx, CorruptImageError, "PARTIALLY_PRESENT")


def _rewrite_metadata_item(path: Path, fn) -> None:
    """Let ``fn`` edit the metadata region (which has no checksum of its own)."""
    with open_image(str(path)) as img:
        off = img.metadata_region.file_offset
    with open(path, "r+b") as f:
        f.seek(off)
        buf = bytearray(f.read(MiB))
        fn(buf)
        f.seek(off)
        f.write(buf)


def test_invalid_block_size(vhdx):
    def edit(buf: bytearray) -> None:
        for i in range(S.METADATA_HEADER.get(buf, 0, "entry_count")):
            e = S.METADATA_ENTRY.parse(buf, S.METADATA_HEADER.size + S.METADATA_ENTRY.size * i)
            if S.guid_from(e.item_id) == S.FILE_PARAMETERS_GUID:
                S.FILE_PARAMETERS.put(buf, e.item_offset, "block_size", 3 * MiB)

    _rewrite_metadata_item(vhdx, edit)
    _expect(vhdx, CorruptImageError, "invalid block size")


def test_metadata_signature(vhdx):
    _rewrite_metadata_item(vhdx, lambda b: b.__setitem__(slice(0, 8), b"garbage!"))
    _expect(vhdx, CorruptImageError, "metadata")


def test_bad_log_entry_crc_means_nothing_to_replay(tmp_path):
    path = fresh_copy(IMAGES / "q-dirtylog.vhdx.gz", tmp_path, "dirty.vhdx")
    with open_image(str(path)) as img:
        assert img.overlay.entries == 1
        log_off = img.header.log_offset
        assert img.read(3 * MiB, 4) == b"ZZZZ"
    with open(path, "rb") as f:  # damage the entry that holds the pending write
        f.seek(log_off)
        log = f.read(MiB)
    for off in range(0, MiB, 4096):
        if S.LOG_ENTRY_HEADER.get(log, off, "signature") == S.LOG_ENTRY_SIG:
            guid = S.LOG_ENTRY_HEADER.get(log, off, "log_guid")
            with open_image(str(path)) as img:
                if guid == img.header.log_guid.bytes_le:
                    inside = S.LOG_ENTRY_HEADER.size + S.LOG_DATA_DESCRIPTOR.offset("file_offset")
                    _poke(path, log_off + off + inside, b"\xee")  # inside a descriptor
    with open_image(str(path)) as img:
        assert img.overlay.entries == 0  # a torn/corrupt entry was never committed
        assert img.read(3 * MiB, 4) == bytes(4)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(NotFoundError):
        open_image(str(tmp_path / "nope.vhdx"))
    with pytest.raises(InputError):
        open_image(str(tmp_path))


def test_vhd_bad_footer(tmp_path):
    dyn = fresh_copy(IMAGES / "q-dyn.vhd.gz", tmp_path, "dyn.vhd")
    _poke(dyn, FOOTER_SIZE + DYN_HEADER.offset("checksum"), b"\x01\x02")
    _expect(dyn, CorruptImageError, "dynamic header")


def test_vhd_truncated(tmp_path):
    dyn = fresh_copy(IMAGES / "q-dyn.vhd.gz", tmp_path, "dyn.vhd")
    with open(dyn, "r+b") as f:
        f.truncate(f.seek(0, 2) - 2 * MiB)
    # the footer copy at offset 0 is used, and the BAT then points past the end
    _expect(dyn, CorruptImageError, "past the end of the file")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(0, 4 * MiB - 1), st.integers(0, 255)), min_size=1, max_size=8),
    st.booleans(),
)
def test_random_damage_never_tracebacks(tmp_path_factory, pokes, fix_crc):
    """Random byte damage in the structures: open+read works or raises one of our errors."""
    base = tmp_path_factory.getbasetemp() / "fuzz-src"
    base.mkdir(exist_ok=True)
    src = base / "disk.vhdx"
    if not src.exists():
        fresh_copy(IMAGES / "q-dyn-1m.vhdx.gz", base, "disk.vhdx")
    data = bytearray(src.read_bytes()[: 6 * MiB])
    for off, val in pokes:
        data[off] = val
    if fix_crc:  # let damage reach the parsers behind the checksums
        for h in S.HEADER_OFFSETS:
            data[h : h + S.HEADER_SIZE] = S.with_crc(data[h : h + S.HEADER_SIZE], S.HEADER)
        for r in S.REGION_TABLE_OFFSETS:
            table = data[r : r + S.REGION_TABLE_SIZE]
            data[r : r + S.REGION_TABLE_SIZE] = S.with_crc(table, S.REGION_HEADER)
    path = base / "fuzzed.vhdx"
    path.write_bytes(bytes(data))
    try:
        _read_all(path)
    except OfflineICError as exc:
        assert "\n" not in str(exc)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, 8191), st.integers(0, 255)), min_size=1, max_size=6))
def test_damaged_log_entry_with_valid_crc(tmp_path_factory, pokes):
    """Damage inside a pending log entry whose CRC is then fixed: replay or one clear error."""
    base = tmp_path_factory.getbasetemp() / "logfuzz-src"
    base.mkdir(exist_ok=True)
    src = base / "dirty.vhdx"
    if not src.exists():
        fresh_copy(IMAGES / "q-dirtylog.vhdx.gz", base, "dirty.vhdx")
    with open_image(str(src)) as img:
        lo = img.header.log_offset
        guid = img.header.log_guid.bytes_le
    data = bytearray(src.read_bytes())
    entry = next(
        o
        for o in range(lo, lo + MiB, 4096)
        if S.LOG_ENTRY_HEADER.get(data, o, "signature") == S.LOG_ENTRY_SIG
        and S.LOG_ENTRY_HEADER.get(data, o, "log_guid") == guid
    )
    length = S.LOG_ENTRY_HEADER.get(data, entry, "entry_length")
    ck = S.LOG_ENTRY_HEADER.offset("checksum")
    for off, val in pokes:
        if ck <= off < ck + 4:
            continue
        data[entry + off % length] = val
    data[entry : entry + length] = S.with_crc(data[entry : entry + length], S.LOG_ENTRY_HEADER)
    path = base / "fuzzed.vhdx"
    path.write_bytes(bytes(data))
    try:
        _read_all(path)
    except OfflineICError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("name", ["q-dyn-2m.vhdx.gz", "q-fixed.vhd.gz"])
@pytest.mark.parametrize("compress", ["gzip", "xz", "bzip2"])
def test_a_compressed_image_is_named_as_such_not_read_as_raw(tmp_path, name, compress):
    """`verify disk.vhdx.gz` once reported "ok": the gzip bytes were read as a raw disk."""
    import bz2
    import gzip
    import lzma

    src = fresh_copy(IMAGES / name, tmp_path)
    packer = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress}[compress]
    packed = tmp_path / f"{src.name}.{compress}"
    packed.write_bytes(packer(src.read_bytes()))
    with pytest.raises(InputError, match=rf"compressed \({compress}\), not a disk image"):
        open_image(str(packed))


def _refused_at_once(path: Path, head: bytearray, words: str) -> None:
    """``head`` then zeros as a 64 MiB raw disk: listing its volumes is one error, at once."""
    import time

    from offline_ic.volumes import list_volumes

    path.write_bytes(head)
    os.truncate(path, 64 << 20)
    start = time.monotonic()
    with open_image(str(path)) as img, pytest.raises(CorruptImageError, match=words):
        list_volumes(img)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("count, entry_size", [(5_046_400, 128), (524_288, 0), (40_000, 128)])
def test_gpt_claiming_a_huge_entry_array_is_refused_at_once(tmp_path, count, entry_size):
    """Found by the fuzz campaign (tests/fuzz/corpus/gpt): a GPT header claiming millions of
    partition entries (or entries of 0 bytes) had dissect read 524,288 entries of a 64 MiB
    disk, 10-27 s; now one clear error before any entry is read."""
    import struct

    disk = bytearray(1 << 20)
    struct.pack_into("<B3xB3xII", disk, 446, 0, 0xEE, 1, (64 << 11) - 1)
    disk[510:512] = b"\x55\xaa"
    disk[512:520] = b"EFI PART"
    struct.pack_into("<QII", disk, 512 + 0x48, 2, count, entry_size)
    _refused_at_once(tmp_path / "gpt.raw", disk, "GPT header claims")


@pytest.mark.parametrize(
    "lead, mbr_signature",
    [(b"", False), (b"ER\x02\x00" + bytes(0x1FC), False), (b"", True)],
)
def test_apple_partition_map_claiming_millions_of_entries_is_refused(tmp_path, lead, mbr_signature):
    """Found by the fuzz campaign (tests/fuzz/corpus/gpt/apm-*): a disk starting "PM" (no
    MBR) had dissect read 131,072 map entries of a 64 MiB disk, more than 20 s."""
    import struct

    disk = bytearray(1 << 20)
    entry = b"PM\0\0" + struct.pack(">I", 0x74747474)
    disk[len(lead) : len(lead) + 8] = entry
    disk[: len(lead)] = lead
    if mbr_signature:  # dissect rejects this "MBR" (no partition, "NTFS" VBR) and tries APM
        disk[3:7], disk[510:512] = b"NTFS", b"\x55\xaa"
    _refused_at_once(tmp_path / "apm.raw", disk, "Apple partition map claims")


def test_extended_partitions_branching_into_a_billion_paths_are_refused(tmp_path):
    """Found by the fuzz campaign (tests/fuzz/corpus/mbr): dissect follows every extended
    entry of every EBR. 30 EBRs, each with two entries pointing to the next, are 2^30 visits
    (no end); 1,946 chained EBRs took a second. More than 1,024 is one error, at once."""
    import struct

    disk = bytearray(1 << 20)
    struct.pack_into("<B3xB3xII", disk, 446, 0, 0x05, 1, 4096)  # extended at sector 1
    disk[510:512] = b"\x55\xaa"
    for n in range(1, 31):
        at = n * 512
        if n < 30:
            for slot in range(2):  # EBR n: two links to EBR n + 1 (relative to EBR 1)
                struct.pack_into("<B3xB3xII", disk, at + 446 + 16 * slot, 0, 0x05, n, 8)
        disk[at + 510 : at + 512] = b"\x55\xaa"
    _refused_at_once(tmp_path / "ebr.raw", disk, "more than 1024 boot records")


def _fdisk_bsd_disk(tmp_path: Path, label_commands: bytes = b"") -> bytearray:
    """The first 2 MiB of a 64 MiB disk: an MBR (sfdisk) whose FreeBSD slice at sector 2048
    holds a real BSD disklabel written by util-linux fdisk (4 partitions, at byte 1049088);
    ``label_commands`` are fdisk's BSD-menu commands run before it writes the label."""
    import shutil
    import subprocess

    if not (shutil.which("sfdisk") and shutil.which("fdisk")):
        pytest.skip("needs sfdisk and fdisk (Debian package fdisk)")
    disk = tmp_path / "bsd-real.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 64 << 20)
    script = b"label: dos\nlabel-id: 0x12345678\nstart=2048, size=61440, type=a5\n"
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, check=True)
    subprocess.run(  # b: edit the nested BSD disklabel, y: create one, w: write it
        ["fdisk", str(disk)],
        input=b"b\ny\n" + label_commands + b"w\nq\n",
        check=True,
        capture_output=True,
    )
    head = bytearray(disk.read_bytes()[: 2 << 20])
    assert head[1049088:1049092] == bytes.fromhex("57455682")  # BSD_MAGIC, little-endian
    return head


def test_real_bsd_disklabel_is_read_as_before(tmp_path):
    """fdisk's label (4 entries, none a volume) is not a claim: the disk is listed whole."""
    from offline_ic.volumes import list_volumes

    path = tmp_path / "bsd.raw"
    path.write_bytes(_fdisk_bsd_disk(tmp_path))
    os.truncate(path, 64 << 20)
    with open_image(str(path)) as img:
        assert [v.type for v in list_volumes(img)] == ["whole disk"]


def test_a_bsd_partition_is_read_where_its_slice_puts_it(tmp_path):
    """fdisk's label with a 4.2BSD partition at sector 2112 of the disk (64 sectors into the
    slice) holding an ext4 made by mke2fs: dissect counts its offset from the slice, and it
    was listed at byte 0 of the disk (the MBR), as "0x07 (NTFS)", with no file system."""
    _listed_at_sector_2112(tmp_path / "bsd.raw", _fdisk_bsd_disk(tmp_path, PARTITION_A_AT_2112))


# fdisk's BSD-menu commands; n: new partition a from sector 2112, 8 MiB; t: its type 7 (4.2BSD)
PARTITION_A_AT_2112 = b"n\na\n2112\n+8M\nt\na\n7\n"


def _listed_at_sector_2112(path: Path, head: bytes | bytearray) -> None:
    """``head`` as the start of a 64 MiB disk with an ext4 (mke2fs) at sector 2112, where
    its BSD label's partition a is: list_volumes finds that one volume, there."""
    import shutil
    import subprocess

    from offline_ic.volumes import list_volumes

    if shutil.which("mke2fs") is None:
        pytest.skip("needs mke2fs")
    path.write_bytes(head)
    os.truncate(path, 64 << 20)
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-E", f"offset={2112 * 512}", str(path), "8M"], check=True
    )
    with open_image(str(path)) as img:
        (vol,) = list_volumes(img)
        assert (vol.offset, vol.scheme, vol.type) == (2112 * 512, "bsd", "BSD fstype 7 (4.2BSD)")
        assert vol.filesystem is not None and vol.filesystem.startswith("ext")
        stream = vol.stream()
        stream.seek(1024 + 56)
        assert stream.read(2) == b"\x53\xef"  # the ext superblock's magic


def test_a_bsd_label_on_the_whole_disk_puts_its_partitions_on_the_disk(tmp_path):
    """fdisk's label moved to sector 1 of a disk without MBR or GPT (dissect tries a label
    there last), its raw partition made the whole disk as a standalone label's is: the
    4.2BSD partition at sector 2112 is listed there. It was an AttributeError traceback
    (the lvm fuzz target's finding: a disklabel64 spliced over an LVM label)."""
    import shutil
    import struct
    import subprocess

    label = _fdisk_bsd_disk(tmp_path, PARTITION_A_AT_2112)[1049088 : 1049088 + 512]
    raw_partition = 148 + 2 * 16  # d_partitions[2], 'c': its p_offset, the label's base
    struct.pack_into("<I", label, raw_partition + 4, 0)
    path = tmp_path / "bsd-whole.raw"
    _listed_at_sector_2112(path, bytes(512) + label)
    if shutil.which("partx"):  # libblkid reads the label on the whole disk the same way
        shown = subprocess.run(
            ["partx", "-s", "-g", "-o", "START", str(path)], capture_output=True, text=True
        )
        assert shown.stdout.split() == ["2112"], shown


def test_bsd_disklabel_claiming_65535_partitions_is_refused(tmp_path):
    """fdisk's real label with its 16-bit partition count set to 65,535: dissect read every
    entry, 2.6 s a label (and an MBR can name the label in a thousand boot records)."""
    import struct

    disk = _fdisk_bsd_disk(tmp_path)
    struct.pack_into("<H", disk, 1049088 + 138, 65535)
    _refused_at_once(tmp_path / "bsd.raw", disk, "BSD disklabel at byte 1049088 claims 65535")


def test_a_claiming_label_in_a_logical_partition_is_refused(tmp_path):
    """The label of a FreeBSD slice that is a logical partition (in an extended one, the
    slice at sector 8 of the first EBR's sector 1: disk sector 9) is checked too."""
    import struct

    disk = bytearray(1 << 20)
    struct.pack_into("<B3xB3xII", disk, 446, 0, 0x05, 1, 4096)  # extended at sector 1
    disk[510:512] = b"\x55\xaa"
    struct.pack_into("<B3xB3xII", disk, 512 + 446, 0, 0xA5, 8, 2048)  # FreeBSD at 1 + 8
    disk[1022:1024] = b"\x55\xaa"
    label = 10 * 512  # sector 1 of the slice
    struct.pack_into("<I", disk, label, 0x82564557)
    struct.pack_into("<IHH", disk, label + 132, 0x82564557, 0, 65535)
    _refused_at_once(tmp_path / "bsd-logical.raw", disk, f"at byte {label} claims 65535")


def test_standalone_disklabel64_claiming_four_billion_partitions_is_refused(tmp_path):
    """A disklabel64 at sector 1 of a disk with no other table (dissect tries it last) with
    a 32-bit count: dissect read 64-byte entries to the end of the disk (a million here)."""
    import struct

    disk = bytearray(1 << 20)
    struct.pack_into("<IIII", disk, 512, 0xC4464C59, 0, 0, 0xFFFFFFFF)
    _refused_at_once(tmp_path / "bsd64.raw", disk, "claims 4294967295 partitions")


def test_bsd_labels_named_by_every_gpt_entry_are_refused_together(tmp_path):
    """16,384 GPT entries of the FreeBSD disklabel type, all at one label of 64 partitions
    (each label within its own bound): a million entries for dissect; refused as a disk."""
    import struct
    import uuid

    count, freebsd = 16384, uuid.UUID("516e7cb4-6ecf-11d6-8ff8-00022d09712b").bytes_le
    disk = bytearray(4 << 20)
    struct.pack_into("<B3xB3xII", disk, 446, 0, 0xEE, 1, (64 << 11) - 1)
    disk[510:512] = b"\x55\xaa"
    disk[512:520] = b"EFI PART"
    struct.pack_into("<QII", disk, 512 + 0x48, 2, count, 128)
    for i in range(count):
        at = 1024 + 128 * i
        disk[at : at + 16] = freebsd
        struct.pack_into("<QQ", disk, at + 32, 6144, 8191)
    label = 6144 * 512 + 512
    struct.pack_into("<I", disk, label, 0x82564557)
    struct.pack_into("<IHH", disk, label + 132, 0x82564557, 0, 64)
    _refused_at_once(tmp_path / "bsd-gpt.raw", disk, "at most 64 a label and 4096 a disk")

"""File offsets -> volume offsets through NTFS data runs, checked by ntfs-3g reading the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from offline_ic.errors import SafetyRefusal
from offline_ic.fs.ntfs import NtfsVolume, check_volume_writable, map_file_writes
from tests.helpers import require_fuse

MiB = 1024 * 1024
pytestmark = pytest.mark.skipif(
    shutil.which("ntfs-3g") is None or shutil.which("mkntfs") is None,
    reason="ntfs-3g / mkntfs not installed",
)


@pytest.fixture(autouse=True)
def _needs_fuse():
    require_fuse()


def mounted(volume: Path):
    """Context manager: the volume mounted read-write through ntfs-3g (FUSE)."""
    import contextlib

    @contextlib.contextmanager
    def _mount():
        mnt = Path(tempfile.mkdtemp(prefix="oic-ntfs-"))
        try:
            subprocess.run(["ntfs-3g", str(volume), str(mnt)], check=True)
        except subprocess.CalledProcessError as exc:
            mnt.rmdir()
            pytest.skip(f"ntfs-3g cannot mount here: {exc}")
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
            mnt.rmdir()

    return _mount()


@pytest.fixture(scope="module")
def fragmented_volume(tmp_path_factory):
    """NTFS volume whose file 'frag.bin' is split over several data runs (made by ntfs-3g)."""
    volume = tmp_path_factory.mktemp("ntfs") / "vol.ntfs"
    with open(volume, "wb") as fh:
        fh.truncate(16 * MiB)
    subprocess.run(
        ["mkntfs", "-q", "-F", "-Q", "-c", "4096", str(volume)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    with mounted(volume) as mnt:
        # fill the volume with 64 KiB files
        count = 0
        try:
            while True:
                (mnt / f"fill{count}").write_bytes(os.urandom(64 * 1024))
                count += 1
        except OSError:
            pass
    # free every other file in on-disk order: the only free space is then 64 KiB holes, so a
    # 400 KiB file must be split over several runs
    with open(volume, "rb") as fh:
        ntfs = NtfsVolume(fh)
        by_lcn = sorted((ntfs.file_info(f"fill{i}").runs[0][0], i) for i in range(count))
    with mounted(volume) as mnt:
        for _, i in by_lcn[::2]:
            (mnt / f"fill{i}").unlink()
    with mounted(volume) as mnt:
        (mnt / "frag.bin").write_bytes(os.urandom(400 * 1024))
    return volume


def test_writes_land_where_ntfs3g_reads_them(fragmented_volume, tmp_path):
    volume = tmp_path / "vol.ntfs"
    shutil.copyfile(fragmented_volume, volume)
    with open(volume, "rb") as fh:
        ntfs = NtfsVolume(fh)
        info = ntfs.file_info("frag.bin")
        assert len(info.runs) >= 2, "the fixture must produce a fragmented file"
        original = ntfs.open("frag.bin").read()
        # writes that straddle run boundaries: every 60 KiB, 9000 bytes
        writes = [(off, os.urandom(9000)) for off in range(1000, info.size - 9000, 60 * 1024)]
        planned = map_file_writes(info, ntfs.cluster_size, writes)
    assert len(planned) > len(writes), "some writes must be split across runs"
    with open(volume, "r+b") as fh:
        for offset, data in planned:
            fh.seek(offset)
            fh.write(data)
    expected = bytearray(original)
    for off, data in writes:
        expected[off : off + len(data)] = data
    with mounted(volume) as mnt:
        assert (mnt / "frag.bin").read_bytes() == bytes(expected)


def test_refuses_growth_and_resident_files(fragmented_volume, tmp_path):
    volume = tmp_path / "vol.ntfs"
    shutil.copyfile(fragmented_volume, volume)
    with mounted(volume) as mnt:
        (mnt / "tiny.txt").write_bytes(b"small")
    with open(volume, "rb") as fh:
        ntfs = NtfsVolume(fh)
        info = ntfs.file_info("frag.bin")
        with pytest.raises(SafetyRefusal, match="past the end"):
            map_file_writes(info, ntfs.cluster_size, [(info.size - 10, b"x" * 20)])
        with pytest.raises(SafetyRefusal, match="resident"):
            map_file_writes(ntfs.file_info("tiny.txt"), ntfs.cluster_size, [(0, b"S")])
        check_volume_writable(ntfs)  # clean, not hibernated: no refusal


def test_refuses_hibernated_volume(fragmented_volume, tmp_path):
    volume = tmp_path / "vol.ntfs"
    shutil.copyfile(fragmented_volume, volume)
    with mounted(volume) as mnt:
        (mnt / "hiberfil.sys").write_bytes(b"wake" + bytes(8188))
    with open(volume, "rb") as fh, pytest.raises(SafetyRefusal, match="'wake'"):
        check_volume_writable(NtfsVolume(fh))


def set_volume_dirty_flag(volume: Path) -> None:
    """Set $Volume's dirty bit (what Windows does while mounted) by patching MFT record 3."""
    import struct

    with open(volume, "r+b") as fh:
        boot = fh.read(512)
        bytes_per_sector, sectors_per_cluster = struct.unpack_from("<HB", boot, 11)
        (mft_lcn,) = struct.unpack_from("<q", boot, 48)
        record_offset = mft_lcn * bytes_per_sector * sectors_per_cluster + 3 * 1024
        fh.seek(record_offset)
        record = bytearray(fh.read(1024))
        assert record[:4] == b"FILE"
        pos = struct.unpack_from("<H", record, 0x14)[0]
        while True:
            attr_type, length = struct.unpack_from("<II", record, pos)
            assert attr_type != 0xFFFFFFFF, "no $VOLUME_INFORMATION in $Volume"
            if attr_type == 0x70:
                content = pos + struct.unpack_from("<H", record, pos + 0x14)[0]
                flags_at = content + 10
                assert flags_at % 512 < 510, "flags would sit under an update-sequence fixup"
                record[flags_at] |= 0x01
                break
            pos += length
        fh.seek(record_offset)
        fh.write(record)


def test_refuses_dirty_volume(fragmented_volume, tmp_path):
    volume = tmp_path / "vol.ntfs"
    shutil.copyfile(fragmented_volume, volume)
    with open(volume, "rb") as fh:
        assert NtfsVolume(fh).is_dirty() is False
    set_volume_dirty_flag(volume)
    if shutil.which("ntfsinfo"):  # an independent reader agrees that the volume is now dirty
        proc = subprocess.run(["ntfsinfo", "-m", "-f", str(volume)], capture_output=True, text=True)
        assert "DIRTY" in proc.stdout.upper(), proc.stdout
    with open(volume, "rb") as fh:
        ntfs = NtfsVolume(fh)
        assert ntfs.is_dirty() is True
        with pytest.raises(SafetyRefusal, match="dirty"):
            check_volume_writable(ntfs)

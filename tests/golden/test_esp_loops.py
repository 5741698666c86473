"""A FAT cluster chain that loops on the EFI system partition (damaged or hostile) is one
error, not a hang: dissect.fat lists a chain to its end-of-chain mark before reading, so the
old reading of a looped BCD chain grew for ever (1 GiB in 20 s) and `check --profile
golden`, `inspect` and `reg get HKLM\\BCD00000000` never finished.

The ESPs are made by mkfs.fat and mtools (conftest.BcdDisk); the chains to loop are the ones
mtools' mshowfat names, and the loop is written into both FATs here."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from offline_ic.errors import CorruptImageError, InputError
from offline_ic.fs.fat import read_fat_file
from tests.helpers import REPO

BCD = "::/EFI/Microsoft/Boot/BCD"
SECONDS = 60  # each run below takes about a second; the old code never ended


def _chain(esp: bytes, path: str, tmp_path: Path) -> list[int]:
    """The clusters of ``path`` on the FAT image ``esp``, as mtools' mshowfat gives them."""
    if shutil.which("mshowfat") is None:
        pytest.skip("needs mtools' mshowfat")
    image = tmp_path / "esp-for-mshowfat.fat"
    image.write_bytes(esp)
    out = subprocess.run(
        ["mshowfat", "-i", str(image), path], capture_output=True, text=True, check=True
    ).stdout
    clusters: list[int] = []
    for first, last in re.findall(r"<(\d+)(?:-(\d+))?>", out):
        clusters += range(int(first), int(last or first) + 1)
    assert clusters, out
    return clusters


def _point(esp: bytearray, cluster: int, value: int) -> None:
    """FAT12 entry ``cluster`` := ``value``, in every FAT (the layout from the boot sector)."""
    sector, reserved, fats = struct.unpack_from("<HxHB", esp, 11)
    fat_sectors = struct.unpack_from("<H", esp, 22)[0]
    for k in range(fats):
        at = (reserved + k * fat_sectors) * sector + cluster + cluster // 2
        pair = struct.unpack_from("<H", esp, at)[0]
        odd = cluster & 1  # an odd entry is the high 12 bits of its two bytes
        pair = (pair & 0x000F) | (value << 4) if odd else (pair & 0xF000) | value
        struct.pack_into("<H", esp, at, pair)


def _looped_disk(bcd_disks, tmp_path: Path, path: str, *, onto_itself: bool) -> Path:
    """A copy of the test disk whose ESP chain of ``path`` ends by pointing back at its
    first cluster (``onto_itself``: its first cluster points at itself)."""
    disk = bcd_disks.disk(bcd_disks.good_bcd())
    start, size = bcd_disks.esp["start"] * 512, bcd_disks.esp["size"] * 512
    with open(disk, "r+b") as fh:
        fh.seek(start)
        esp = bytearray(fh.read(size))
        clusters = _chain(bytes(esp), path, tmp_path)
        _point(esp, clusters[0] if onto_itself else clusters[-1], clusters[0])
        fh.seek(start)
        fh.write(esp)
    return disk


def _run(*args: object) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "offline_ic", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SECONDS,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("path", "onto_itself"),
    [(BCD, False), (BCD, True), ("::/EFI/Microsoft/Boot", True)],
    ids=["bcd-chain-back-to-its-start", "bcd-cluster-onto-itself", "boot-folder-onto-itself"],
)
def test_a_looped_chain_on_the_esp_is_not_checkable_and_the_rest_runs(
    bcd_disks, tmp_path, path, onto_itself
):
    disk = _looped_disk(bcd_disks, tmp_path, path, onto_itself=onto_itself)
    code, out, err = _run("check", "--profile", "golden", "--json", disk)
    assert code in (0, 1) and "Traceback" not in err, err
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    store = checks["golden.windows.bcd.store"]
    assert store["status"] == "info", store
    assert "FAT cluster chain starting at cluster" in store["detail"], store
    assert "(it loops, or the file is too large)" in store["detail"], store
    assert checks["golden.windows.pending.file_rename"]["status"] == "warn"  # the rest ran

    code, out, err = _run("inspect", disk)
    assert code in (0, 1) and "Traceback" not in err, err
    assert re.search(r"Boot configuration \(BCD\): not read: .*it loops", out), out

    code, out, err = _run("reg", "get", disk, "HKLM\\BCD00000000\\Description")
    assert (code, out) == (2, ""), err
    assert err.startswith("offline-ic: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("path", "onto_itself"),
    [(BCD, False), (BCD, True), ("::/EFI/Microsoft/Boot", True)],
    ids=["bcd-chain-back-to-its-start", "bcd-cluster-onto-itself", "boot-folder-onto-itself"],
)
def test_browsing_a_looped_chain_is_one_error(bcd_disks, tmp_path, path, onto_itself):
    """`cat` and `ls` read the ESP through dissect.target's FAT file system, not the store
    reader: a looped chain grew `cat` to 7.5 GB in 60 s before every chain was bounded by
    the entries the FAT holds (fs/fat.bound_chains, applied where volumes are opened)."""
    disk = _looped_disk(bcd_disks, tmp_path, path, onto_itself=onto_itself)
    esp = 1 + bcd_disks.partitions.index(bcd_disks.esp)
    code, out, err = _run("cat", disk, f"{esp}:/EFI/Microsoft/Boot/BCD")
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and "is longer than" in err and "it loops" in err, err
    code, out, err = _run("ls", disk, f"{esp}:/EFI/Microsoft/Boot")
    if path == BCD:  # the folder's own chain ends: it lists (the size is the entry's)
        assert (code, out, err) == (0, "BCD\n", "")
    else:
        assert (code, out) == (2, "") and "it loops" in err and err.count("\n") == 1, err


def test_the_bounded_reader_reads_what_mtools_wrote(bcd_disks, tmp_path):
    """The BCD bytes mcopy put on the ESP, read back whole; a smaller limit or a missing
    file or a folder is said as such."""
    bcd = bcd_disks.good_bcd()
    disk = bcd_disks.disk(bcd)
    start, size = bcd_disks.esp["start"] * 512, bcd_disks.esp["size"] * 512
    with open(disk, "rb") as fh:
        fh.seek(start)
        esp = fh.read(size)
    path = "EFI/Microsoft/Boot/BCD"
    assert read_fat_file(io.BytesIO(esp), path, where="ESP", limit=16 << 20) == bcd.read_bytes()
    assert (
        read_fat_file(io.BytesIO(esp), "EFI/Microsoft/Boot/nope", where="ESP", limit=1 << 20)
        is None
    )
    with pytest.raises(InputError, match="larger than 4096 bytes"):
        read_fat_file(io.BytesIO(esp), path, where="ESP", limit=4096)
    with pytest.raises(InputError, match="is a folder"):
        read_fat_file(io.BytesIO(esp), "EFI/Microsoft", where="ESP", limit=1 << 20)
    looped = bytearray(esp)
    clusters = _chain(esp, BCD, tmp_path)
    _point(looped, clusters[-1], clusters[0])
    with pytest.raises(CorruptImageError, match="cluster chain starting at cluster"):
        read_fat_file(io.BytesIO(bytes(looped)), path, where="ESP", limit=16 << 20)

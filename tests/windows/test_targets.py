"""What a TARGET may be, and the one-line errors for targets that are not usable."""

from __future__ import annotations

import json
import subprocess

import pytest

MiB = 1024 * 1024


def assert_one_line_error(result, code: int, *needles: str) -> None:
    exit_code, out, err = result
    assert exit_code == code, (exit_code, out, err)
    assert out == ""
    assert err.startswith("offline-ic: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def copy_volume(src, src_offset: int, size: int, dest, dest_offset: int) -> None:
    with open(src, "rb") as fin, open(dest, "r+b") as fout:
        fin.seek(src_offset)
        fout.seek(dest_offset)
        fout.write(fin.read(size))


@pytest.fixture(scope="module")
def two_windows_disk(tmp_path_factory, win10_dirty_raw):
    """MBR disk with the same Windows NTFS volume twice (partitions 1 and 2) and an empty 3rd."""
    disk = tmp_path_factory.mktemp("two") / "two-windows.raw"
    with open(disk, "wb") as fh:
        fh.truncate(128 * MiB)
    table = (
        "label: dos\nstart=2048, size=114688, type=7\n"
        "start=116736, size=114688, type=7\nstart=231424, type=83\n"
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=table.encode(), check=True)
    for start in (2048, 116736):
        copy_volume(win10_dirty_raw, 2048 * 512, 56 * MiB, disk, start * 512)
    return disk


def test_missing_path(cli, tmp_path):
    assert_one_line_error(
        cli("services", "list", tmp_path / "nope.vhdx"), 2, "nope.vhdx", "no such file"
    )


def test_blank_disk_has_no_windows(cli, tmp_path):
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"\0" * (4 * MiB))
    assert_one_line_error(cli("services", "list", blank), 2, "no Windows volume found")


def test_several_windows_volumes_need_volume_option(cli, two_windows_disk):
    assert_one_line_error(
        cli("services", "list", two_windows_disk), 2, "volumes 1, 2", "--volume N"
    )
    code, out, err = cli("services", "list", two_windows_disk, "--volume", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["hive_sequence"] == [1622, 1621]


def test_volume_option_errors(cli, two_windows_disk):
    assert_one_line_error(
        cli("services", "list", two_windows_disk, "--volume", "7"), 2, "no volume 7"
    )
    assert_one_line_error(
        cli("services", "list", two_windows_disk, "--volume", "3"), 2, "volume 3", "not NTFS"
    )


def test_corrupt_ntfs_boot_sector(cli, tmp_path, win10_dirty_raw):
    disk = tmp_path / "broken-ntfs.raw"
    disk.write_bytes(win10_dirty_raw.read_bytes())
    with open(disk, "r+b") as fh:  # keep the 'NTFS' OEM id, destroy the BPB
        fh.seek(2048 * 512 + 11)
        fh.write(b"\xff" * 60)
    result = cli("services", "list", disk)
    assert result[0] == 2, result
    assert "Traceback" not in result[2] and result[2].count("\n") == 1


def test_corrupt_bare_hive(cli, tmp_path, system_win10):
    hive = tmp_path / "SYSTEM"
    data = bytearray(system_win10.read_bytes()[: 3 * 4096 + 100])  # truncated mid-hbin
    hive.write_bytes(bytes(data))
    result = cli("services", "list", hive)
    assert result[0] == 2, result
    assert result[2].count("\n") == 1 and "Traceback" not in result[2]


def test_truncated_vhdx(cli, tmp_path, win10_dynamic):
    broken = tmp_path / "truncated.vhdx"
    with open(win10_dynamic, "rb") as fin:
        broken.write_bytes(fin.read(3 * MiB))
    result = cli("services", "list", broken)
    assert result[0] == 2, result
    assert result[2].count("\n") == 1 and "Traceback" not in result[2]


def test_directory_that_is_not_a_guest(cli, tmp_path):
    assert_one_line_error(cli("services", "list", tmp_path), 2, "not a Windows guest root")


def test_empty_file(cli, tmp_path):
    empty = tmp_path / "disk.vhdx"
    empty.write_bytes(b"")
    assert_one_line_error(cli("services", "list", empty), 2, "empty file")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("disk.vhdx", "not a valid VHDX"),
        ("disk.avhdx", "not a valid VHDX"),
        ("disk.vhd", "not a valid VHD"),
    ],
)
def test_name_says_vhd_but_signature_missing(cli, tmp_path, name, expected):
    """Garbage named .vhdx is reported as a damaged VHDX, not silently read as a raw disk."""
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 4096)
    assert_one_line_error(cli("services", "list", path), 2, expected)


def test_raw_image_with_any_name_is_read(cli, tmp_path, win10_dirty_raw):
    renamed = tmp_path / "disk.img"
    renamed.write_bytes(win10_dirty_raw.read_bytes())
    code, out, err = cli("services", "list", renamed, "--json")
    assert code == 0, err
    assert json.loads(out)["hive_state"] == "dirty"

"""Windows checks: the verdicts and the evidence they name."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from offline_ic.guest.windows.checks import check_windows_guest
from offline_ic.guest.windows.guest import DirectoryWindowsGuest, HiveFileGuest
from offline_ic.image import open_image
from offline_ic.workflows.check import windows_checks
from tests.helpers import real_data, real_hyperv_system_hive, require_fuse, script_module

MiB = 1024 * 1024


def by_id(results):
    out = {r.id: r for r in results}
    assert len(out) == len(results), "check ids must be unique"
    return out


def test_win10_test_hive(system_win10):
    results = by_id(check_windows_guest(HiveFileGuest(str(system_win10))))
    assert results["windows.hive.system"].status == "pass"
    assert results["windows.ic.vmictimesync"].status == "fail"
    assert "disabled" in results["windows.ic.vmictimesync"].detail
    assert (
        "ControlSet001\\Services\\vmictimesync Start=4" in results["windows.ic.vmictimesync"].detail
    )
    # not shipped everywhere: without a host config that enables it, its absence is info
    assert results["windows.ic.vmicrdv"].status == "info"
    assert "does not exist" in results["windows.ic.vmicrdv"].detail
    assert results["windows.ic.vmicheartbeat"].status == "pass"
    for driver in ("vmbus", "storvsc", "storflt"):
        assert results[f"windows.driver.{driver}"].status == "pass"
    assert results["windows.fast_startup"].status == "warn"
    assert "HiberbootEnabled=1" in results["windows.fast_startup"].detail
    assert "windows.hibernation" not in results  # a bare hive has no volume to look at


def test_real_hyperv_guest_passes(unpacked):
    hive = unpacked(real_hyperv_system_hive())
    results = check_windows_guest(HiveFileGuest(str(hive)))
    failing = [r for r in results if r.status == "fail"]
    assert failing == []
    assert {r.id for r in results if r.status == "warn"} == {"windows.fast_startup"}


def test_windows7_fails_for_missing_ics_and_storvsc(unpacked):
    hive = unpacked(real_data("hives/regipy_SYSTEM.xz"))
    results = by_id(check_windows_guest(HiveFileGuest(str(hive))))
    assert all(
        results[f"windows.ic.{n}"].status == "fail"
        for n in ("vmicshutdown", "vmicheartbeat", "vmicvss", "vmickvpexchange")
    )
    assert results["windows.driver.storvsc"].status == "fail"
    assert "Start=3" in results["windows.driver.storvsc"].detail
    assert "INACCESSIBLE_BOOT_DEVICE" in results["windows.driver.storvsc"].detail
    assert results["windows.driver.vmbus"].status == "pass"


def test_dirty_hive_in_image_warns_and_names_logs(win10_dirty_raw):
    with open_image(str(win10_dirty_raw)) as image:
        results = by_id(windows_checks(image))
    hive = results["windows.hive.system"]
    assert hive.status == "warn"
    assert "1622/1621" in hive.detail and "recovered in memory from its LOG1, LOG2" in hive.detail
    assert results["windows.hibernation"].status == "pass"
    assert results["windows.ntfs.dirty"].status == "pass"


@pytest.mark.skipif(shutil.which("ntfs-3g") is None, reason="ntfs-3g not installed")
def test_hibernated_volume_fails(tmp_path, system_win10):
    require_fuse()
    build = script_module("build_windows_testdata")
    hiberfil = tmp_path / "hiberfil.sys"
    hiberfil.write_bytes(b"HIBR" + b"\0" * 8188)
    vol = tmp_path / "vol.ntfs"
    try:
        build.make_ntfs_volume(
            vol,
            40 * MiB,
            2048,
            {"Windows/System32/config/SYSTEM": system_win10, "hiberfil.sys": hiberfil},
        )
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot build an NTFS volume here: {exc}")
    disk = tmp_path / "hibernated.raw"
    build.make_disk(disk, 48 * MiB, "dos", [(2048, 40 * 2048, "7", vol)])
    with open_image(str(disk)) as image:
        results = by_id(windows_checks(image))
    assert results["windows.hibernation"].status == "fail"
    assert "'HIBR'" in results["windows.hibernation"].detail


def test_directory_guest(tmp_path, system_win10):
    config = tmp_path / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    shutil.copyfile(system_win10, config / "SYSTEM")
    results = by_id(check_windows_guest(DirectoryWindowsGuest(str(tmp_path))))
    assert results["windows.ic.vmictimesync"].status == "fail"
    assert results["windows.hive.system"].status == "pass"


def test_a_string_storvsc_start_is_named_as_a_wrong_type(tmp_path, system_win10):
    """A REG_SZ "0" is no start type to Windows: `check` says so instead of "has no Start
    value". The hive is changed by hivexregedit (not by us)."""
    from tests.helpers import hivex_merge

    hive = tmp_path / "SYSTEM"
    shutil.copyfile(system_win10, hive)
    body = '[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\storvsc]\n"Start"="0"\n'
    hivex_merge(hive, body, "HKEY_LOCAL_MACHINE\\SYSTEM")
    result = by_id(check_windows_guest(HiveFileGuest(str(hive))))["windows.driver.storvsc"]
    assert result.status == "fail"
    assert "storvsc Start is REG_SZ '0', not a REG_DWORD" in result.detail
    assert "will not boot" in result.detail and "no Start value" not in result.detail

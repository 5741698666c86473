"""target.py decides once which guest a TARGET holds: Linux first, then Windows.

The disk is built here from real parts: an ext4 root with /etc/os-release (mke2fs -d) and an
NTFS volume with a real SYSTEM hive (mkntfs + ntfs-3g), both on one GPT disk (sfdisk).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.helpers import require_fuse, script_module

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkntfs", "ntfs-3g", "sfdisk", "mke2fs")),
    reason="needs mkntfs, ntfs-3g, sfdisk and mke2fs",
)


@pytest.fixture(scope="module")
def both_disk(tmp_path_factory, unpacked) -> Path:
    require_fuse()
    from tests.windows.conftest import WIN

    system = unpacked(WIN / "SYSTEM-win10.xz")
    windows = script_module("build_windows_testdata")
    linux = script_module("build_linux_testdata")
    tmp = tmp_path_factory.mktemp("both")
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    )
    ext = tmp / "root.ext4"
    linux.mkfs_ext4(root, ext, 16, "root", str(uuid.uuid4()))
    ntfs = tmp / "windows.ntfs"
    windows.make_ntfs_volume(ntfs, 40 * MiB, 0, {"Windows/System32/config/SYSTEM": system})
    return linux.make_disk(tmp / "both.raw", [("linux", ext), ("linux", ntfs)])


def test_open_target_order(both_disk):
    from offline_ic.target import IMAGE, open_target

    with open_target(str(both_disk)) as opened:
        assert (opened.kind, opened.family) == (IMAGE, "linux")
    with open_target(str(both_disk), family="windows") as opened:
        assert opened.family == "windows"
    with open_target(str(both_disk), volume=2) as opened:
        assert opened.family == "windows"


def test_every_command_sees_the_same_guest(cli, both_disk):
    code, out, err = cli("inspect", str(both_disk), "--json")
    assert code == 0, err
    assert json.loads(out)["os"]["family"] == "linux"
    code, out, err = cli("check", str(both_disk), "--json")
    assert json.loads(out)["os"] == "linux", err
    code, out, err = cli("inspect", str(both_disk), "--volume", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["os"]["family"] == "windows"
    code, out, err = cli("check", str(both_disk), "--volume", "2", "--json")
    assert json.loads(out)["os"] == "windows", err
    # a Windows-only command asks for the Windows guest, whatever the order
    code, out, err = cli("services", "list", str(both_disk), "--json")
    assert code == 0, err
    assert json.loads(out)["services"]


def test_directory_targets_use_the_same_order(cli, tmp_path, unpacked):
    from offline_ic.target import DIRECTORY, GuestNotFound, open_target
    from tests.windows.conftest import WIN

    config = tmp_path / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    shutil.copyfile(unpacked(WIN / "SYSTEM-win10.xz"), config / "SYSTEM")
    with open_target(str(tmp_path)) as opened:
        assert (opened.kind, opened.family) == (DIRECTORY, "windows")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("ID=debian\n")
    with open_target(str(tmp_path)) as opened:
        assert opened.family == "linux"
    with open_target(str(tmp_path), family="windows") as opened:
        assert opened.family == "windows"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GuestNotFound, match="neither a Linux root"):
        open_target(str(empty))

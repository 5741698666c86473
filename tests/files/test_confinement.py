"""A target opens only files inside what the user named (issue 19, "Files outside what the
user named"; docs/architecture.md "Files in and files out").

A VM folder's disks and a differencing disk's parents must resolve inside the folder named
or beside the child; anything else is exit 3 naming the path, and the message is the same
whether or not something is there. ``--parent PATH`` and ``--allow-outside DIR`` allow more.
Built from the small VHDX test images and XML configs made at test time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from offline_ic.image.vhdx.create import create_child, create_vhdx
from offline_ic.image.vhdx.image import VhdxReader
from tests.helpers import TESTDATA, script_module, unpack

MiB = 1 << 20


@pytest.fixture(scope="module")
def host_builder():
    return script_module("build_host_testdata")


def _vm_folder(root: Path, host_builder, disk_path: str) -> Path:
    """A 2012 R2 VM folder whose config names ``disk_path`` (a Windows path)."""
    (root / "Virtual Machines").mkdir(parents=True)
    spec = dict(host_builder.FILES["2012r2-heartbeat-off-gsi-on.xml"])
    spec["disks"] = (disk_path,)
    config = root / "Virtual Machines" / "0C3F6A52-1D8E-4B7A-9F21-6E4B2D9A7C10.xml"
    config.write_bytes(host_builder.config_xml(**spec))
    return root


def test_vm_disk_symlinked_to_another_directory(cli, tmp_path, host_builder):
    other = tmp_path / "other-guest"
    other.mkdir()
    real = unpack(TESTDATA / "images/q-dyn-2m.vhdx.gz", other)
    vm = _vm_folder(tmp_path / "web-01", host_builder, "D:\\VMs\\Virtual Hard Disks\\web-01.vhdx")
    (vm / "Virtual Hard Disks").mkdir()
    link = vm / "Virtual Hard Disks" / "web-01.vhdx"
    link.symlink_to(real)
    code, _out, err = cli("inspect", vm, "--evidence", "--json")
    assert code == 3, err
    assert str(link) in err and "leads outside the VM folder" in err
    assert str(other) not in err  # where it leads is not told
    code, out, err = cli("inspect", vm, "--evidence", "--json", "--allow-outside", other)
    # allowed: opened and hashed (this test disk holds no guest, so inspect exits 2 with
    # its report: no OS found)
    assert code == 2 and "no Windows volume found" in err, err
    files = json.loads(out)["evidence"]["files"]
    disk = next(f for f in files if f["role"] == "disk")
    assert disk["path"] == str(link) and disk["resolved_path"] == str(real)


def test_virtual_hard_disks_symlinked_to_root(cli, tmp_path, host_builder):
    """`Virtual Hard Disks` -> / : nothing outside is listed or opened, and the message is
    the same whether /etc/<leaf> exists or not."""
    messages = []
    for leaf in ("passwd", "no-such-file-here"):
        vm = _vm_folder(
            tmp_path / leaf / "vm", host_builder, f"D:\\x\\Virtual Hard Disks\\etc\\{leaf}"
        )
        (vm / "Virtual Hard Disks").symlink_to("/")
        code, _out, err = cli("inspect", vm)
        assert code == 3, err
        assert f"{vm / 'Virtual Hard Disks'} leads outside the VM folder" in err
        messages.append(err.replace(str(tmp_path / leaf), "<DIR>").replace(leaf, "<LEAF>"))
    assert messages[0] == messages[1]


def _child_with_locator(d: Path, relative: str, absolute: str) -> Path:
    """A differencing VHDX whose parent locator names ``relative`` and ``absolute``."""
    child = d / "child.avhdx"
    create_vhdx(
        str(child),
        4 * MiB,
        block_size=MiB,
        parent_locator={
            "parent_linkage": "{6f1e3c2a-0000-4000-8000-000000000001}",
            "relative_path": relative,
            "absolute_win32_path": absolute,
        },
    )
    return child


@pytest.mark.parametrize(
    ("relative", "absolute"),
    [
        ("..\\..\\..\\..\\..\\..\\etc\\shadow", "C:\\x\\base.vhdx"),
        ("..\\..\\..\\..\\..\\..\\etc\\no-such-file", "C:\\x\\base.vhdx"),
        (".\\base.vhdx", "/etc/passwd"),
        (".\\base.vhdx", "/proc/self/mem"),
        (".\\base.vhdx", "/no/such/dir/base.vhdx"),
    ],
)
def test_parent_locator_outside_is_refused_without_telling_existence(
    cli, tmp_path, relative, absolute
):
    d = tmp_path / "a" / "b"
    d.mkdir(parents=True)
    child = _child_with_locator(d, relative, absolute)
    code, _out, err = cli("inspect", child)
    assert code == 3, err
    assert "parent locator" in err and "leads outside the child's folder" in err
    assert "--parent PATH" in err and "--allow-outside DIR" in err
    for word in ("not found", "not a VHDX", "exist", "Input/output", "Permission"):
        assert word not in err


def _child_elsewhere(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(shared folder, base VHDX in it, child in another folder: locator ..\\shared\\…)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    base = unpack(TESTDATA / "images/q-dyn-2m.vhdx.gz", shared)
    (tmp_path / "mine").mkdir()
    child = tmp_path / "mine" / "child.avhdx"
    create_child(str(base), str(child))
    return shared, base, child


def test_parent_in_another_directory_with_the_right_linkage(cli, tmp_path):
    """A locator to another directory's VHDX (right linkage GUID): refused by default,
    opened when the user names it (--parent) or its folder (--allow-outside)."""
    shared, base, child = _child_elsewhere(tmp_path)
    code, _out, err = cli("verify", child)
    assert code == 3 and "leads outside the child's folder" in err, err
    assert cli("verify", child, "--parent", base)[0] == 0
    assert cli("verify", child, "--allow-outside", shared)[0] == 0
    # beside the child, the same chain is fine
    beside = shared / "child.avhdx"
    create_child(str(base), str(beside))
    with VhdxReader(str(beside)) as img:
        assert img.parent is not None and img.parent.path == str(base)


def test_allow_outside_does_not_leak_into_the_next_command(cli, tmp_path):
    shared, _base, child = _child_elsewhere(tmp_path)
    assert cli("verify", child, "--allow-outside", shared)[0] == 0
    assert cli("verify", child)[0] == 3


def test_special_files_are_never_disks(cli, tmp_path):
    code, _out, err = cli("inspect", "/proc/self/mem")
    assert code == 2 and "kernel file" in err
    os.mkfifo(tmp_path / "disk.vhdx")
    code, _out, err = cli("inspect", tmp_path / "disk.vhdx")
    assert code == 2 and "a FIFO, not a disk image" in err


def test_output_child_in_another_folder_is_written(cli, unpacked, tmp_path):
    """``--output CHILD`` may put the child anywhere: its parent is the image the user named.
    Reading the child later through its locator needs that folder allowed, as any child."""
    golden = tmp_path / "golden" / "golden.vhdx"
    golden.parent.mkdir()
    shutil.copyfile(unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz"), golden)
    child = tmp_path / "out" / "serviced.avhdx"
    child.parent.mkdir()
    code, _out, err = cli("services", "set", golden, "heartbeat=disabled", "--output", child)
    assert code == 0, err
    code, _out, err = cli("services", "list", child)
    assert code == 3 and "leads outside the child's folder" in err
    code, out, err = cli("services", "list", child, "--json", "--allow-outside", golden.parent)
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)["services"]}
    assert rows["vmicheartbeat"]["start"] == 4

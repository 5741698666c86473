"""`kvp get` and `inspect` on Linux guests; Windows commands on a Linux image say what it is."""

from __future__ import annotations

import json
import subprocess

import pytest

from offline_ic.guest.linux.kvp import RECORD_SIZE


def test_kvp_get_on_linux_image_reads_pool_3_as_parameters(cli, linux_images):
    code, out, err = cli("kvp", "get", linux_images["debian-good"], "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["pool"] == "parameters"
    assert doc["values"]["VirtualMachineName"] == "golden-debian12"


def test_kvp_pools_equal_the_files_in_the_image(cli, linux_images, parts_dir, tmp_path):
    """Cross-check: the pool files extracted by debugfs (e2fsprogs) parse to what we print."""
    import shutil

    if shutil.which("debugfs") is None:
        pytest.skip("debugfs not installed")
    from offline_ic.guest.linux.kvp import parse_kvp_pool
    from offline_ic.image import open_image
    from offline_ic.volumes import list_volumes

    image = linux_images["debian-good"]
    with open_image(str(image)) as disk:
        vol = list_volumes(disk)[0]
    fs_file = tmp_path / "root.ext4"
    with open(image, "rb") as fin, open(fs_file, "wb") as fout:
        fin.seek(vol.offset)
        fout.write(fin.read(vol.size))
    code, out, err = cli("kvp", "get", image, "--pool", "all", "--json")
    assert code == 0, err
    pools = json.loads(out)["pools"]
    for index, name in enumerate(["external", "guest", "auto", "parameters", "auto_internal"]):
        dump = tmp_path / f"pool{index}"
        subprocess.run(
            ["debugfs", "-R", f"dump /var/lib/hyperv/.kvp_pool_{index} {dump}", str(fs_file)],
            capture_output=True,
            check=True,
        )
        data = dump.read_bytes() if dump.exists() else b""
        assert len(data) % RECORD_SIZE == 0
        assert pools[name] == parse_kvp_pool(data), name
    assert pools["external"]["Owner"] == "ci-pipeline"


def test_inspect_linux_image(cli, linux_images):
    code, out, err = cli("inspect", linux_images["rhel-lvm-xfs"], "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["os"]["family"] == "linux"
    assert doc["os"]["distro_family"] == "rhel"
    assert doc["os"]["distro"].startswith("AlmaLinux")
    assert doc["linux_root_volume"] == 3
    assert doc["os"]["default_kernel"] in doc["os"]["kernels"]
    assert "saved_entry" in doc["os"]["default_kernel_reason"]
    assert [v["filesystem"] for v in doc["volumes"]] == ["xfs", "lvm2", "xfs"]


def test_windows_command_on_linux_image_says_linux(cli, linux_images):
    code, out, err = cli("services", "list", linux_images["debian-good"])
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "holds a Linux guest (Debian GNU/Linux 12" in err and "offline-ic check" in err


def test_no_os_at_all(cli, linux_images):
    code, out, err = cli("kvp", "get", linux_images["bad-no-os"])
    assert code == 2 and out == ""
    assert "no Windows volume found" in err and "no Linux root" in err

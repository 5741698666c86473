"""``check --profile golden`` on Linux: a Debian 12 root from the real Debian parts
(scripts/build_linux_testdata.py), left as the build machine would leave it, then cleaned."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import script_module

TREE = script_module("build_linux_testdata")
IDS = (
    "machine_id",
    "ssh_hostkeys",
    "cloud_init",
    "waagent",
    "dhcp_leases",
    "net_rules",
    "shell_history",
    "logfiles",
)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return TREE.unpack_parts(tmp_path_factory.mktemp("golden-parts"))


def used_root(base: Path, work: Path) -> Path:
    """A Debian root with what a build leaves behind on the machine it ran on."""
    root = TREE.debian_tree(base, work)
    TREE.write_file(root, "/etc/machine-id", "4c4c4544003510508036b4c04f4e4d32\n")
    for kind in ("rsa", "ed25519"):
        TREE.write_file(root, f"/etc/ssh/ssh_host_{kind}_key", f"-----BEGIN {kind}-----\n", 0o600)
        TREE.write_file(root, f"/etc/ssh/ssh_host_{kind}_key.pub", f"ssh-{kind} AAAA\n")
    TREE.write_file(root, "/var/lib/cloud/instances/i-0abc/boot-finished", "1\n")
    TREE.make_link(root, "/var/lib/cloud/instance", "/var/lib/cloud/instances/i-0abc")
    TREE.write_file(root, "/var/lib/waagent/provisioned", "")
    TREE.write_file(root, "/var/lib/dhcp/dhclient.eth0.leases", "lease {\n}\n")
    rule = 'SUBSYSTEM=="net", ATTR{address}=="00:15:5d:01:02:03", NAME="eth0"\n'
    TREE.write_file(root, "/etc/udev/rules.d/70-persistent-net.rules", rule)
    TREE.write_file(root, "/root/.bash_history", "apt-get install -y hyperv-daemons\n")
    TREE.write_file(root, "/home/builder/.bash_history", "export TOKEN=...\n")
    big = root / "var/log/journal.big"
    big.parent.mkdir(parents=True, exist_ok=True)
    with open(big, "wb") as fh:
        fh.truncate(12 << 20)  # a sparse 12 MiB log
    return root


def _golden(cli, target, *extra) -> tuple[int, dict[str, dict]]:
    code, out, err = cli("check", "--profile", "golden", "--json", target, *extra)
    assert code in (0, 1), err
    return code, {c["id"]: c for c in json.loads(out)["checks"]}


def test_each_generalization_finding_is_named(cli, parts, tmp_path):
    _, checks = _golden(cli, used_root(parts, tmp_path))
    for cid in IDS:
        assert checks[f"golden.linux.{cid}"]["status"] == "warn", checks[f"golden.linux.{cid}"]
    detail = {cid: checks[f"golden.linux.{cid}"]["detail"] for cid in IDS}
    assert detail["machine_id"].startswith("/etc/machine-id = 4c4c4544003510508036b4c04f4e4d32")
    assert (
        "/etc/ssh/ssh_host_ed25519_key, /etc/ssh/ssh_host_ed25519_key.pub" in detail["ssh_hostkeys"]
    )
    assert detail["cloud_init"].startswith(
        "cloud-init instance state: /var/lib/cloud/instance, /var/lib/cloud/instances/i-0abc"
    )
    assert "/var/lib/waagent/provisioned" in detail["waagent"]
    assert "/var/lib/dhcp/dhclient.eth0.leases" in detail["dhcp_leases"]
    assert "/etc/udev/rules.d/70-persistent-net.rules" in detail["net_rules"]
    assert "/root/.bash_history, /home/builder/.bash_history" in detail["shell_history"]
    assert "/var/log/journal.big (12.0 MiB)" in detail["logfiles"]


def test_a_generalized_root_passes_and_the_log_limit_is_a_parameter(cli, parts, tmp_path):
    root = TREE.debian_tree(parts, tmp_path)
    TREE.write_file(root, "/etc/machine-id", "uninitialized\n")
    TREE.write_file(root, "/root/.bash_history", "")  # emptied, as virt-sysprep leaves none
    (root / "var/log").mkdir(parents=True, exist_ok=True)
    with open(root / "var/log/syslog", "wb") as fh:
        fh.truncate(3 << 20)
    code, checks = _golden(cli, root)
    for cid in IDS:
        assert checks[f"golden.linux.{cid}"]["status"] == "pass", checks[f"golden.linux.{cid}"]
    policy = tmp_path / "gate.toml"
    policy.write_text('[params."golden.linux.logfiles"]\nmax_mib = 2\n')
    _, checks = _golden(cli, root, "--policy", policy)
    assert checks["golden.linux.logfiles"]["detail"].startswith(
        "log files over 2 MiB: /var/log/syslog (3.0 MiB)"
    )
    policy.write_text('[params."golden.linux.logfiles"]\nmax_mib = "big"\n')
    code, _, err = cli("check", "--profile", "golden", root, "--policy", policy)
    assert code == 2 and "max_mib must be a whole number" in err


def test_generalization_on_a_disk_image(cli, parts, tmp_path):
    import shutil

    if shutil.which("mke2fs") is None or shutil.which("sfdisk") is None:
        pytest.skip("e2fsprogs/fdisk missing")
    root = used_root(parts, tmp_path / "w")
    os.remove(root / "var/log/journal.big")  # keep the image small
    raw = TREE.single_ext4_disk(root, tmp_path / "used.raw")
    _, checks = _golden(cli, raw)
    assert checks["golden.linux.machine_id"]["status"] == "warn"
    assert checks["golden.linux.ssh_hostkeys"]["status"] == "warn"
    assert checks["golden.linux.logfiles"]["status"] == "pass"
    assert checks["golden.disk.encryption"]["status"] == "pass"

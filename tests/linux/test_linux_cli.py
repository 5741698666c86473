"""``offline-ic check`` as a user runs it: exit codes, JSON shape, JUnit, policies, KVP pools."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from offline_ic.checks.junit import junit_xml
from offline_ic.checks.model import CheckResult
from offline_ic.checks.policy import Policy, parse_policy
from offline_ic.checks.report import Report
from offline_ic.errors import InputError
from offline_ic.guest.linux.guest import open_linux_guest
from offline_ic.guest.linux.kvp import parse_kvp_pool, read_kvp_pools
from offline_ic.image import open_image

from .conftest import run_cli

K61 = "6.1.0-56-cloud-amd64"


def test_json_report_of_a_good_image(linux_images):
    img = str(linux_images["debian-good"])
    proc = run_cli("check", img, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc) == ["image", "os", "distro", "kernel", "result", "counts", "checks"]
    assert doc["image"] == img and doc["os"] == "linux"
    assert doc["distro"] == "Debian GNU/Linux 12 (bookworm)" and doc["kernel"] == K61
    assert doc["result"] == "pass"
    assert all(list(c) == ["id", "status", "detail"] for c in doc["checks"])


def test_failing_image_exits_1_and_writes_junit(linux_images, tmp_path):
    junit = tmp_path / "r.xml"
    proc = run_cli("check", str(linux_images["debian-no-storvsc"]), "--junit", str(junit))
    assert proc.returncode == 1
    assert "FAIL  linux.initramfs.hv_storvsc" in proc.stdout
    assert proc.stdout.rstrip().endswith("result: fail (21 pass, 0 warn, 1 fail)")
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite.get("failures") == "1" and suite.get("tests") == "22"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["linux.initramfs.hv_storvsc"]


def test_policy_turns_daemon_warnings_into_failures(linux_images, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[checks]\nfail = ["linux.daemon.*"]\nskip = ["linux.daemon.vss"]\n')
    img = str(linux_images["debian-daemons-masked"])
    assert run_cli("check", img).returncode == 0  # warnings only
    proc = run_cli("check", img, "--json", "--policy", str(policy))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["linux.daemon.vss"]["status"] == "skip"
    assert by_id["linux.daemon.vss"]["detail"].startswith(
        "[policy p.toml: skip linux.daemon.vss] was warn: "
    )
    assert doc["counts"]["skip"] == 1
    assert doc["counts"] == {
        s: sum(c["status"] == s for c in doc["checks"])
        for s in ("pass", "warn", "fail", "info", "skip")
    }
    assert by_id["linux.daemon.kvp"]["status"] == "fail"
    assert "[policy p.toml: warn is fail for linux.daemon.*]" in by_id["linux.daemon.kvp"]["detail"]
    assert doc["result"] == "fail"


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent.vhdx"], "no such file"),
        (["{good}", "--volume", "9"], "no volume 9"),
        (["{good}", "--policy", "/nonexistent.toml"], "policy file not found"),
        (["{good}", "--policy", "{badpolicy}"], "not valid TOML"),
    ],
)
def test_input_errors_exit_2_with_one_line(linux_images, tmp_path, args, message):
    bad = tmp_path / "bad.toml"
    bad.write_text("[checks\nfail=")
    args = [a.format(good=linux_images["debian-good"], badpolicy=bad) for a in args]
    proc = run_cli("check", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("offline-ic: error: ") and message in lines[0]


def test_no_os_is_an_input_error_with_its_report_not_a_crash(linux_images):
    """No OS found is exit 2 (bad input), as in every command, not 1 (a failed check):
    the report still says why (os.detect), and the error object names the image."""
    proc = run_cli("check", str(linux_images["bad-no-os"]), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["os"] is None and doc["checks"][0]["id"] == "os.detect"
    assert doc["error"]["code"] == 2 and doc["error"]["kind"] == "not_found"
    assert doc["error"]["message"].startswith(str(linux_images["bad-no-os"]) + ": no Linux root")
    assert proc.stderr == f"offline-ic: error: {doc['error']['message']}\n"


def test_windows_fallback_is_called_when_no_linux_root(linux_images, monkeypatch):
    import offline_ic.target as target
    import offline_ic.workflows.check as wc
    from offline_ic.guest.windows.guest import DirectoryWindowsGuest
    from offline_ic.workflows.check import run_checks

    calls = []
    found = DirectoryWindowsGuest("/nonexistent")  # any Windows guest object

    def fake_find(image, volume=None):
        calls.append(volume)
        return found

    def fake_checks(guest, host=None):
        assert guest is found
        return [CheckResult("windows.service.vmickvpexchange", "fail", "Start=4 (disabled)")]

    monkeypatch.setattr(target, "windows_guest_in_image", fake_find)
    monkeypatch.setattr(wc, "check_windows_guest", fake_checks)
    with open_image(str(linux_images["bad-no-os"])) as disk:
        report = run_checks(disk, volume=1)
    assert calls == [1]
    assert report.to_dict()["os"] == "windows" and report.result == "fail"


def test_policy_rules():
    results = [
        CheckResult("linux.daemon.kvp", "warn", "masked"),
        CheckResult("linux.module.hv_netvsc", "fail", "missing"),
        CheckResult("linux.kernel.others", "warn", "old kernel"),
    ]
    pol = parse_policy(
        '[checks]\nfail = ["linux.daemon.*"]\nwarn = "linux.module.hv_netvsc"\n'
        'skip = ["linux.kernel.*"]\n',
        "p.toml",
    )
    out = pol.apply(results)
    assert [(r.id, r.status) for r in out] == [
        ("linux.daemon.kvp", "fail"),
        ("linux.module.hv_netvsc", "warn"),
        ("linux.kernel.others", "skip"),
    ]
    assert out[2].detail == "[policy p.toml: skip linux.kernel.*] was warn: old kernel"
    assert Policy().apply(results) == results
    with pytest.raises(InputError, match="unknown key"):
        parse_policy("[checks]\nfails = []\n")
    with pytest.raises(InputError, match="list of check id patterns"):
        parse_policy("[checks]\nskip = [1]\n")


def test_junit_escapes_and_counts():
    rep = Report(
        "a&b.vhdx",
        "linux",
        "D",
        "6.1",
        [CheckResult("x.y", "fail", '<bad> & "q"'), CheckResult("x.z", "warn", "w")],
    )
    root = ET.fromstring(junit_xml(rep, 1.5))
    assert root.get("failures") == "1" and root.find("testsuite").get("name") == "a&b.vhdx"
    assert root.find(".//failure").get("message") == '<bad> & "q"'
    assert root.find(".//system-out").text == "WARN: w"


def test_kvp_pools_of_a_guest(linux_images):
    with open_image(str(linux_images["debian-good"])) as disk:
        pools = read_kvp_pools(open_linux_guest(disk))
    assert list(pools) == ["external", "guest", "auto", "parameters", "auto_internal"]
    assert pools["parameters"]["VirtualMachineName"] == "golden-debian12"
    assert pools["parameters"]["HostName"] == "HV-HOST-07"
    assert pools["external"] == {"BuildId": "2024.06.1", "Owner": "ci-pipeline"}
    assert pools["guest"] == {}


def test_kvp_pool_real_sample():
    from tests.helpers import real_data

    data = real_data("kvp/azure_kvp_pool_0").read_bytes()
    assert parse_kvp_pool(data) == {"IPoIB_Data": "NUMPAIRS:1|00155D33FF0B:172.16.1.2"}
    # a trailing partial record and non-UTF-8 bytes do not break parsing
    odd = ("ké".encode() + b"\0").ljust(512, b"\0") + b"\xff\xfe\0".ljust(2048, b"\0")
    assert parse_kvp_pool(data + odd + b"partial") == {
        "IPoIB_Data": "NUMPAIRS:1|00155D33FF0B:172.16.1.2",
        "ké": "\ufffd\ufffd",
    }


def test_mounted_directory_root_never_reads_the_host(parts_dir, tmp_path):
    """A guest root given as a directory: its links are resolved inside it, not on the host."""
    import os
    import shutil

    root = tmp_path / "guest"
    shutil.copytree(parts_dir / "root", root, symlinks=True)
    shutil.copyfile(parts_dir / "initrd" / "initrd-good.img", root / "boot" / f"initrd.img-{K61}")
    for k in ("6.12.107+deb12-cloud-amd64",):
        shutil.rmtree(root / "usr/lib/modules" / k)
        (root / "boot" / f"vmlinuz-{k}").unlink()
    secret = tmp_path / "host-secret.conf"
    secret.write_text("blacklist hv_utils\n")
    os.symlink(str(secret), root / "etc/modprobe.d/evil.conf")  # absolute host path
    os.symlink("../../../../../../.." + str(secret), root / "etc/modprobe.d/evil2.conf")
    proc = run_cli("check", str(root), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    by_id = {c["id"]: c for c in doc["checks"]}
    assert doc["os"] == "linux" and doc["kernel"] == K61
    assert by_id["linux.os.release"]["detail"].startswith(
        f"/etc/os-release on directory {root}: ID=debian"
    )
    detail = by_id["linux.blacklist.hv_utils"]["detail"]
    assert by_id["linux.blacklist.hv_utils"]["status"] == "pass"
    top = "/" + str(secret).split("/")[1]  # the first missing component inside the guest
    assert f"skipped unreadable /etc/modprobe.d/evil.conf ({top} does not exist)" in detail
    assert f"/etc/modprobe.d/evil2.conf ({top} does not exist)" in detail


def test_directory_that_is_no_guest_is_an_input_error(tmp_path):
    proc = run_cli("check", str(tmp_path))
    assert proc.returncode == 2 and "neither a Linux root" in proc.stderr


def test_encrypted_root_is_named_in_the_reason(builder, tmp_path):
    if shutil.which("sfdisk") is None:
        pytest.skip("sfdisk not installed")
    part = tmp_path / "luks.part"
    part.write_bytes(b"LUKS\xba\xbe\x00\x02" + b"\0" * (4 << 20))  # a LUKS2 header's magic
    disk = builder.make_disk(tmp_path / "luks.raw", [("linux", part)])
    proc = run_cli("check", str(disk), "--json")
    assert proc.returncode == 2  # no OS that can be read: an input error, as in every command
    detail = json.loads(proc.stdout)["checks"][0]["detail"]
    assert "volumes 1:luks; volume 1 is encrypted and cannot be read offline" in detail


def test_two_linux_roots_are_named_and_volume_picks_one(builder, tmp_path):
    if shutil.which("mke2fs") is None or shutil.which("sfdisk") is None:
        pytest.skip("e2fsprogs/fdisk not installed")
    parts = []
    for n, ident in ((1, "debian"), (2, "fedora")):
        tree = tmp_path / f"t{n}"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc/os-release").write_text(f'ID={ident}\nPRETTY_NAME="{ident} test"\n')
        fs = tmp_path / f"fs{n}"
        builder.mkfs_ext4(tree, fs, 8, f"r{n}", f"00000000-0000-4000-8000-00000000000{n}")
        parts.append(("linux", fs))
    disk = builder.make_disk(tmp_path / "two.raw", parts)
    doc = json.loads(run_cli("check", str(disk), "--json").stdout)
    rel = doc["checks"][0]
    assert doc["distro"] == "debian test" and rel["id"] == "linux.os.release"
    assert (
        rel["status"],
        "/etc/os-release also on volume 2 (ext): another Linux root (check it "
        "with --volume 2)" in rel["detail"],
    ) == ("warn", True)
    doc = json.loads(run_cli("check", str(disk), "--json", "--volume", "2").stdout)
    assert doc["distro"] == "fedora test" and doc["checks"][0]["status"] == "pass"

"""End to end on real Debian 12 guests: ``offline-ic fix IMAGE --json`` (the whole process:
check, plan, the libguestfs appliance, the commit, check again) fixes each broken variant
(scripts/build_debian_guest.py builds and caches them), and readers we did not write agree
with the result: libvhdi + dissect.extfs read the files back, ``lsinitramfs`` and
``unmkinitramfs`` (the host's initramfs-tools) read the new initramfs extracted that way,
``qemu-img check`` is clean, and offline-ic's own ``check`` and ``verify`` pass.

The failure tests at the end give the engine hand-written edits (a command that fails, a
kill mid-run). At most one appliance launch per test.
Needs root (mke2fs -d keeps owners, mmdebstrap), mmdebstrap, libguestfs-tools and, for the
first build, network access to deb.debian.org.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offline_ic.guest.linux.edits import Remove, RunInGuest, WriteFile
from offline_ic.workflows.appliance import ApplianceError
from offline_ic.workflows.guest_edit import apply_guest_edits
from tests.helpers import REPO

pytestmark = [
    pytest.mark.skipif(shutil.which("guestfish") is None, reason="needs libguestfs-tools"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="needs mmdebstrap"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the guest build needs root"),
    pytest.mark.skipif(shutil.which("lsinitramfs") is None, reason="needs initramfs-tools-core"),
]

sys.path.insert(0, str(REPO / "scripts"))
import build_debian_guest  # noqa: E402

KVER_GLOB = "vmlinuz-*"


def _guest(variant: str, tmp_path: Path) -> Path:
    """A private copy of the cached variant (built first if needed)."""
    try:
        cached = build_debian_guest.build(variant)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"the Debian guest could not be built here ({exc})")
    dest = tmp_path / f"debian12-{variant}.vhdx"
    shutil.copyfile(cached, dest)
    return dest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _LibvhdiIO(io.RawIOBase):
    """A read-only file object over a pyvhdi file (the whole virtual disk)."""

    def __init__(self, f) -> None:
        self._f = f
        self._pos = 0
        self.size = f.media_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = {0: pos, 1: self._pos + pos, 2: self.size + pos}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.size - self._pos))
        data = self._f.read_buffer_at_offset(n, self._pos) if n else b""
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


class IndependentGuest:
    """The guest's root file system read through libvhdi (the chain) and dissect.extfs on
    partition 1 of the GPT (dissect.volume): no offline-ic reader involved."""

    def __init__(self, path: Path, parent: Path | None = None) -> None:
        import pyvhdi
        from dissect.extfs import ExtFS
        from dissect.volume.disk import Disk

        self._files = []
        f = pyvhdi.file()
        f.open(str(path))
        self._files.append(f)
        if parent is not None:
            p = pyvhdi.file()
            p.open(str(parent))
            self._files.append(p)
            f.set_parent(p)
        disk = Disk(_LibvhdiIO(f))
        (root,) = [p for p in disk.partitions if p.name == "root"]
        self.fs = ExtFS(root.open())

    def close(self) -> None:
        for f in self._files:
            f.close()

    def _node(self, path: str):
        try:
            return self.fs.get(path)
        except Exception:  # noqa: BLE001 - dissect's not-found errors differ by version
            return None

    def read(self, path: str) -> bytes:
        node = self._node(path)
        assert node is not None, f"{path} not found"
        return node.open().read()

    def exists(self, path: str) -> bool:
        return self._node(path) is not None

    def readlink(self, path: str) -> str | None:
        node = self._node(path)
        if node is None or node.filetype != stat.S_IFLNK:
            return None
        return node.link

    def mode(self, path: str) -> int:
        return self.fs.get(path).inode.i_mode & 0o7777

    def kernel_version(self) -> str:
        names = [n for n in self.fs.get("/boot").listdir() if n.startswith("vmlinuz-")]
        (name,) = names
        return name.removeprefix("vmlinuz-")


def _lsinitramfs(data: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / "initrd.img"
    path.write_bytes(data)
    out = subprocess.run(
        ["lsinitramfs", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return out.splitlines()


def _offline_ic(*args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "offline_ic", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return done.returncode, done.stdout + done.stderr


def _check_results(path: Path) -> dict[str, str]:
    code, out = _offline_ic("check", str(path), "--json")
    doc = json.loads(out[: out.rindex("}") + 1])
    return {r["id"]: r["status"] for r in doc["checks"]}


def _qemu_img_check(path: Path) -> None:
    done = subprocess.run(
        ["qemu-img", "check", "-f", "vhdx", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _fix(*args: str) -> tuple[int, dict, str]:
    """``offline-ic fix ARGS --json`` as a whole process: exit code, document, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "offline_ic", "fix", *args, "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.stdout, done.stderr
    doc = json.loads(done.stdout)
    write = doc["write"] or {}
    if write.get("appliance_seconds") is not None:
        print(f"appliance {write['appliance_seconds']} s, {doc['bytes_written']} bytes committed")
    return done.returncode, doc, done.stderr


def _statuses(doc: dict) -> dict[str, str]:
    return {a["check"]: a["status"] for a in doc["actions"]}


def _after(doc: dict) -> dict[str, str]:
    return {r["id"]: r["status"] for r in doc["after"]["checks"]}


def _active_lines(text: bytes) -> list[bytes]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(b"#")]


def _initramfs_file(data: bytes, member: str, tmp_path: Path) -> bytes:
    """One file of an initramfs, extracted by initramfs-tools' own unmkinitramfs."""
    image, out = tmp_path / "unmk.img", tmp_path / "unmk"
    image.write_bytes(data)
    subprocess.run(["unmkinitramfs", str(image), str(out)], check=True, capture_output=True)
    found = [p for p in out.rglob(member.lstrip("/")) if p.is_file()]
    found += [p / member.lstrip("/") for p in out.iterdir() if (p / member.lstrip("/")).is_file()]
    assert found, f"{member} not in the initramfs"
    return found[0].read_bytes()


def test_blacklist_and_initramfs_fixed_in_place(tmp_path):
    """The bench_fix case: a hardening blacklist and a MODULES=dep initramfs built without
    the Hyper-V drivers; ``fix`` plans and writes it all in one appliance run, committed
    into the VHDX in place."""
    image = _guest("blacklist-initramfs", tmp_path)
    before = IndependentGuest(image)
    kver = before.kernel_version()
    conf = before.read("/etc/modprobe.d/hardening.conf")
    assert b"blacklist hv_utils" in _active_lines(conf)
    assert not any(
        "hv_storvsc" in n for n in _lsinitramfs(before.read(f"/boot/initrd.img-{kver}"), tmp_path)
    )
    before.close()
    fixed = (
        "linux.initramfs.hv_vmbus",
        "linux.initramfs.hv_storvsc",
        "linux.blacklist.hv_utils",
        "linux.blacklist.hv_netvsc",
    )
    code, doc, err = _fix(str(image))
    assert code == 0, (doc["remaining"], err)
    assert _statuses(doc) == dict.fromkeys(fixed, "done"), doc["actions"]
    assert doc["result"] == "pass" and doc["remaining"] == [] and doc["verified"] is True
    assert doc["write"]["verified_by"] == ["libvhdi"] and doc["write"]["child"] is None
    edits = doc["write"]["edits"]
    assert [e["edit"] for e in edits] == ["WriteFile", "WriteFile", "RunInGuest"], edits
    assert all(e["status"] == "done" for e in edits), edits
    assert "update-initramfs: Generating /boot/initrd.img-" in edits[-1]["output"]
    after_checks = _after(doc)
    assert doc["after"]["result"] == "pass"
    assert all(after_checks[c] == "pass" for c in fixed), after_checks
    after = IndependentGuest(image)
    try:
        new_conf = after.read("/etc/modprobe.d/hardening.conf")
        modules = after.read("/etc/initramfs-tools/modules")
        initrd = after.read(f"/boot/initrd.img-{kver}")
    finally:
        after.close()
    # the lines commented out, not deleted; the rest kept
    assert not [ln for ln in _active_lines(new_conf) if b" hv_" in ln], new_conf
    assert b"# left by a hardening script\n" in new_conf and b"blacklist hv_utils" in new_conf
    assert {b"hv_vmbus", b"hv_storvsc"} <= set(_active_lines(modules)), modules
    names = [os.path.basename(n) for n in _lsinitramfs(initrd, tmp_path)]
    assert any(n.startswith("hv_vmbus.ko") for n in names), names
    assert any(n.startswith("hv_storvsc.ko") for n in names), names
    # the initramfs' copy of the blacklist is the fixed one (update-initramfs ran after it)
    assert _initramfs_file(initrd, "etc/modprobe.d/hardening.conf", tmp_path) == new_conf
    # mkinitramfs' temporary tree in /var/tmp (written, then deleted) is trimmed before the
    # appliance shuts down and not committed: the new initramfs and some metadata only
    assert doc["bytes_written"] < len(initrd) + (4 << 20), (doc["bytes_written"], len(initrd))
    _qemu_img_check(image)
    code, out = _offline_ic("verify", str(image))
    assert code == 0, out
    assert _check_results(image) == after_checks


def test_masked_units_and_kernel_cmdline_fixed_into_output_child_parent_untouched(tmp_path):
    """Masks removed (the kvp unit's and the udev rule's) and ``modprobe.blacklist=`` taken
    out of GRUB_CMDLINE_LINUX by ``fix --output`` into a new child, in one appliance run;
    the parent stays byte-identical."""
    image = _guest("units-cmdline", tmp_path)
    parent_sha = _sha(image)
    before = IndependentGuest(image)
    grub = before.read("/etc/default/grub")
    before.close()
    assert b'GRUB_CMDLINE_LINUX="modprobe.blacklist=hv_utils,hv_vmbus"' in grub.splitlines()
    child = tmp_path / "fixed.avhdx"
    daemons = [f"linux.daemon.{d}" for d in ("kvp", "vss", "fcopy")]
    cmdline = ["linux.blacklist.hv_vmbus", "linux.blacklist.hv_utils"]
    code, doc, err = _fix(str(image), "--output", str(child))
    assert code == 0, (doc["remaining"], err)
    assert _statuses(doc) == dict.fromkeys(cmdline + daemons, "done"), doc["actions"]
    assert doc["before"]["counts"]["warn"] == 3 and doc["before"]["counts"]["fail"] == 2
    assert doc["child"] == str(child) and doc["write"]["child"] == str(child)
    assert doc["verified"] is True and doc["after"]["result"] == "pass"
    edits = doc["write"]["edits"]
    assert [e["edit"] for e in edits] == ["WriteFile", "Remove", "Remove"], edits
    after_checks = _after(doc)
    assert all(after_checks[c] == "pass" for c in cmdline + daemons), after_checks
    assert _sha(image) == parent_sha
    guest = IndependentGuest(child, parent=image)
    try:
        assert guest.readlink("/etc/systemd/system/hv-kvp-daemon.service") is None
        assert not guest.exists("/etc/systemd/system/hv-kvp-daemon.service")
        assert not guest.exists("/etc/udev/rules.d/60-hyperv-daemons.rules")
        assert guest.exists("/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
        assert guest.exists("/usr/lib/systemd/system/hv-kvp-daemon.service")
        new_grub = guest.read("/etc/default/grub")
        assert guest.mode("/etc/default/grub") == 0o644
    finally:
        guest.close()
    # only the one line changed, and only the blacklist left it
    changed = [
        (a, b) for a, b in zip(grub.splitlines(), new_grub.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1 and changed[0][0].startswith(b"GRUB_CMDLINE_LINUX="), changed
    assert b"modprobe.blacklist" not in new_grub and b"hv_" not in new_grub, new_grub
    code, out = _offline_ic("verify", str(child))
    assert code == 0, out
    assert _check_results(child) == after_checks
    _qemu_img_check(image)  # qemu reads the parent (it cannot read differencing VHDX)


def test_daemons_installed_from_a_package_file(tmp_path):
    image = _guest("nodaemons", tmp_path)
    deb = build_debian_guest.hyperv_daemons_deb()
    daemons = [f"linux.daemon.{d}" for d in ("kvp", "vss", "fcopy")]
    code, doc, err = _fix(str(image), "--package", str(deb))
    assert code == 0, (doc["remaining"], err)
    assert _statuses(doc) == dict.fromkeys(daemons, "done"), doc["actions"]
    (install,) = [e for e in doc["write"]["edits"] if e["edit"] == "InstallPackage"]
    assert install["status"] == "done" and "Setting up hyperv-daemons" in install["output"]
    assert doc["verified"] is True and all(_after(doc)[d] == "pass" for d in daemons)
    guest = IndependentGuest(image)
    try:
        assert guest.exists("/usr/sbin/hv_kvp_daemon")
        assert guest.exists("/usr/lib/systemd/system/hv-kvp-daemon.service")
        assert not guest.exists("/usr/sbin/policy-rc.d")  # ours, removed again
        assert not guest.exists("/var/tmp/offline-ic-0.deb")
        status = guest.read("/var/lib/dpkg/status")
    finally:
        guest.close()
    assert b"Package: hyperv-daemons\nStatus: install ok installed" in status
    results = _check_results(image)
    assert all(results[d] == "pass" for d in daemons), results
    _qemu_img_check(image)
    assert _offline_ic("verify", str(image))[0] == 0


def test_daemons_missing_without_a_package_file_name_the_package_and_launch_nothing(tmp_path):
    """No --package: the daemon findings are not_fixable and say which package to give;
    nothing else needs a fix, so no appliance starts and nothing is written. The daemon
    checks only warn (a guest boots without them), but what fix could not fix is a failure
    of the run: exit 1, each daemon named in `remaining` with the package to give."""
    image = _guest("nodaemons", tmp_path)
    before = _sha(image)
    started = time.monotonic()
    code, doc, err = _fix(str(image))
    assert code == 1, err
    assert doc["result"] == "fail"
    assert [r["check"] for r in doc["remaining"]] == [
        f"linux.daemon.{d}" for d in ("kvp", "vss", "fcopy")
    ]
    daemons = [f"linux.daemon.{d}" for d in ("kvp", "vss", "fcopy")]
    assert _statuses(doc) == dict.fromkeys(daemons, "not_fixable"), doc["actions"]
    for action in doc["actions"]:
        assert "install hyperv-daemons" in action["reason"], action
        assert "--package" in action["reason"], action
    assert doc["write"] is None and doc["bytes_written"] == 0 and doc["verified"] is False
    assert [r["status"] for r in doc["after"]["checks"] if r["id"] in daemons] == ["warn"] * 3
    assert _sha(image) == before
    assert time.monotonic() - started < 60  # no appliance (1-4 minutes under TCG)


def test_a_failing_guest_command_writes_nothing(tmp_path):
    image = _guest("clean", tmp_path)
    before = _sha(image)
    edits = [
        WriteFile("/etc/modprobe.d/never.conf", b"# never committed\n"),
        RunInGuest(("sh", "-c", "echo going to fail; exit 3"), "a command that fails"),
        Remove("/etc/fstab"),
    ]
    with pytest.raises(ApplianceError) as err:
        apply_guest_edits(str(image), edits)
    text = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in text
    assert "exit status 3 in the guest: going to fail" in text and "nothing written" in text
    assert _sha(image) == before


_KILL_SCRIPT = r"""
import sys
import time
sys.path.insert(0, sys.argv[2])
from offline_ic.guest.linux.edits import RunInGuest, WriteFile
from offline_ic.workflows import appliance, guest_edit

real = appliance.Appliance.run_in_guest

def announced(self, argv):
    kids = open(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read().split()
    print("running", self._proc.pid, *kids, flush=True)
    return real(self, argv)

appliance.Appliance.run_in_guest = announced
guest_edit.apply_guest_edits(sys.argv[1], [
    WriteFile("/etc/modprobe.d/never.conf", b"# never committed\n"),
    RunInGuest(("sleep", "600"), "killed before it ends"),
])
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sigkill_while_the_appliance_runs_leaves_the_image_and_no_process(tmp_path):
    """offline-ic killed mid-edit: the image was never written, and guestfish and its qemu
    (setpriv --pdeathsig, libguestfs' recovery process) do not outlive it."""
    image = _guest("clean", tmp_path)
    before = _sha(image)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(image), str(REPO)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line and line[0] == "running", line
    pids = [int(p) for p in line[1:]]
    os.kill(proc.pid, 9)
    proc.wait()
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(p) for p in pids), pids
    assert _sha(image) == before
    assert not (image.parent / f"{image.name}.offline-ic-journal").exists()

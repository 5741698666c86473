#!/usr/bin/env python3
"""Pack the real Debian parts the test images are made of into testdata/linux/debian12-parts.tar.xz.

Input: the scratch folder of ``scripts/build_linux_testdata_initramfs`` (a debootstrapped
Debian 12 with the cloud kernels 6.1 and 6.12, hyperv-daemons, and mkinitramfs outputs).
Only what the checks look at is kept, so the tarball stays a few MB:

* ``root/``: the real files of the Debian root that matter (os-release, modprobe.d, udev rules,
  systemd units and wants links, hyperv-daemons binaries, /boot configs, the Hyper-V modules
  and their dependencies with a modules.dep/modules.order filtered to them, modules.builtin);
  ``/boot/vmlinuz-*`` keeps only its first 64 KiB (the real header).
* ``initrd/``: each mkinitramfs and dracut output, trimmed: files over 64 KiB that are not kernel modules
  (libc, udevadm, libcrypto, ...) are dropped, the rest (and the uncompressed early microcode
  archive) kept, recompressed with the compressor mkinitramfs used.
* ``hvd612/``: Debian trixie's hyperv-daemons 6.12 files (no file-copy daemon any more).
* ``ubuntu-lctc/``: Ubuntu 22.04's linux-cloud-tools-common (the /usr/sbin wrappers that exec
  /usr/lib/linux-tools/<kver>/..., the hv-*-daemon units and 60-hv-*-daemon.rules).

usage: build_linux_testdata_parts.py SCRATCH_DIR [OUT.tar.xz]
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from build_linux_testdata import K61, K612, PARTS, compress, cpio_newc  # noqa: E402

from offline_ic.guest.linux.cpio import iter_initramfs  # noqa: E402

KEEP_MODULE_PREFIXES = ("hv_", "hyperv", "hid-hyperv", "pci-hyperv", "hv-")
TRIM_ABOVE = 64 << 10


def _copy(src_root: Path, dst_root: Path, rel: str) -> None:
    src, dst = src_root / rel, dst_root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    elif src.exists():
        shutil.copy2(src, dst)


def _modules(src: Path, dst: Path, kver: str) -> None:
    mdir = f"usr/lib/modules/{kver}"
    dep_text = (src / mdir / "modules.dep").read_text()
    deps = {}
    for line in dep_text.splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    keep = set()
    todo = [m for m in deps if Path(m).name.startswith(KEEP_MODULE_PREFIXES)]
    while todo:
        m = todo.pop()
        if m not in keep:
            keep.add(m)
            todo.extend(deps.get(m, []))
    for m in sorted(keep):
        _copy(src, dst, f"{mdir}/{m}")
    (dst / mdir / "modules.dep").write_text(
        "".join(f"{m}: {' '.join(deps[m])}\n".replace(": \n", ":\n") for m in sorted(keep))
    )
    order = (src / mdir / "modules.order").read_text().splitlines()
    (dst / mdir / "modules.order").write_text("".join(f"{m}\n" for m in order if m in keep))
    for name in ("modules.builtin", "modules.builtin.modinfo"):
        _copy(src, dst, f"{mdir}/{name}")


def trim_initramfs(path: Path) -> bytes:
    """The initramfs with big non-module files dropped, recompressed as it was."""
    archives: dict[int, tuple[str, list]] = {}
    with open(path, "rb") as fh:
        for e in iter_initramfs(fh, keep=lambda n, s: True):
            comp, entries = archives.setdefault(e.archive, (e.compression, []))
            is_module = ".ko" in e.name
            if e.is_file and e.size > TRIM_ABOVE and not is_module and "microcode" not in e.name:
                continue
            data = e.data if e.data is not None else b""
            if e.is_file and e.data is None:
                continue  # over MAX_KEEP: dropped as well
            entries.append((e.name, e.mode, data))
    out = io.BytesIO()
    for _idx, (comp, entries) in sorted(archives.items()):
        blob = cpio_newc(entries)
        out.write(blob if comp == "none" else compress(blob, comp))
    return out.getvalue()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    scratch = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else PARTS
    src = scratch / "root"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        root = stage / "root"
        root.mkdir()
        for link in ("bin", "lib", "lib64", "sbin"):
            _copy(src, root, link)
        for rel in (
            "etc/os-release",
            "usr/lib/os-release",
            "etc/modprobe.d",
            "usr/lib/modprobe.d",
            "usr/lib/udev/rules.d",
            "etc/hostname",
            "etc/systemd/system",
            "usr/sbin/hv_kvp_daemon",
            "usr/sbin/hv_vss_daemon",
            "usr/sbin/hv_fcopy_daemon",
            "usr/libexec/hypervkvpd",
            "etc/initramfs-tools",
        ):
            _copy(src, root, rel)
        for unit in sorted((src / "usr/lib/systemd/system").glob("hv-*.service")):
            _copy(src, root, f"usr/lib/systemd/system/{unit.name}")
        for kver in (K61, K612):
            for name in (f"config-{kver}", f"System.map-{kver}"):
                _copy(src, root, f"boot/{name}")
            with open(src / f"boot/vmlinuz-{kver}", "rb") as fh:
                (root / f"boot/vmlinuz-{kver}").write_bytes(fh.read(64 << 10))
            _modules(src, root, kver)
        (root / "var/lib/hyperv").mkdir(parents=True)
        initrd = stage / "initrd"
        initrd.mkdir()
        for img in sorted([*scratch.glob("initrd-*.img"), *scratch.glob("dracut-*.img")]):
            if img.name == "initrd-most.img":
                continue  # the benchmark's full-size one is not shipped
            (initrd / img.name).write_bytes(trim_initramfs(img))
        hvd = stage / "hvd612"
        deb = next((src / "root").glob("hyperv-daemons_6.12*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(hvd)], check=True)
        shutil.rmtree(hvd / "usr/share", ignore_errors=True)
        ubuntu = stage / "ubuntu-lctc"
        deb = next((src / "root").glob("linux-cloud-tools-common_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(ubuntu)], check=True)
        shutil.rmtree(ubuntu / "usr/share", ignore_errors=True)
        shutil.rmtree(ubuntu / "etc/init", ignore_errors=True)  # upstart jobs
        (ubuntu / "lib/systemd/system/intel-sgx-load-module.service").unlink()
        with tarfile.open(out, "w:xz", preset=9) as tar:
            for name in ("root", "initrd", "hvd612", "ubuntu-lctc"):
                tar.add(stage / name, arcname=name)
    print(f"{out}: {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

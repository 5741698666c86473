#!/usr/bin/env python3
"""Build the Linux guest test images from real Debian parts, without root and without mounts.

The parts (``testdata/linux/debian12-parts.tar.xz``) are a trimmed copy of a real Debian 12
root made by ``scripts/build_linux_testdata_initramfs`` + ``scripts/build_linux_testdata_parts.py``:
the cloud kernels' Hyper-V modules, configs, modules.dep/builtin, real mkinitramfs output
(trimmed), and the real hyperv-daemons files. Each case copies that tree, changes what the
case is about (a blacklist, a mask, another family's unit layout), then builds the disk:
``mke2fs -d`` / ``mkfs.xfs -p protofile`` file systems, a GPT from ``sfdisk``, LVM2 metadata
written here (for the RHEL-like LVM+xfs case), and optionally ``qemu-img convert -O vhdx``.

usage: build_linux_testdata.py OUTDIR [CASE ...]      (default: every case)
needs: e2fsprogs, xfsprogs, fdisk (sfdisk), zstd, xz-utils, lz4, qemu-utils (for VHDX)
"""

from __future__ import annotations

import binascii
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = REPO / "testdata" / "linux" / "debian12-parts.tar.xz"
K61 = "6.1.0-56-cloud-amd64"
K612 = "6.12.107+deb12-cloud-amd64"
MiB = 1 << 20


# ---------------------------------------------------------------------------------------
# cpio newc writer (for trimmed and deliberately broken initramfs images)
# ---------------------------------------------------------------------------------------
def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data) entries, with its trailer."""
    out = bytearray()
    ino = 1
    for name, mode, data in [*entries, ("TRAILER!!!", 0, b"")]:
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + nb
        out += b"\0" * ((4 - len(out) % 4) % 4)
        out += data
        out += b"\0" * ((4 - len(out) % 4) % 4)
        ino += 1
    return bytes(out)


def compress(data: bytes, kind: str) -> bytes:
    """Compress with the real tools, as mkinitramfs calls them."""
    return compress_level(data, kind, None)


def compress_level(data: bytes, kind: str, level: int | None) -> bytes:
    """``compress`` with a chosen level (zstd only; others keep their default)."""
    if kind == "zstd" and level is not None:
        return subprocess.run(
            ["zstd", "-q", f"-{level}", "-T0"], input=data, stdout=subprocess.PIPE, check=True
        ).stdout
    cmd = {
        "gzip": ["gzip", "-9n"],
        "xz": ["xz", "--check=crc32", "-6"],
        "lzma": ["xz", "--format=lzma", "-6"],
        "zstd": ["zstd", "-q", "-19"],
        "lz4": ["lz4", "-q", "-l", "-9"],
        "bzip2": ["bzip2", "-9"],
    }[kind]
    return subprocess.run(cmd, input=data, stdout=subprocess.PIPE, check=True).stdout


# ---------------------------------------------------------------------------------------
# file systems from a directory
# ---------------------------------------------------------------------------------------
def mkfs_ext4(src: Path, img: Path, size_mb: int, label: str, fs_uuid: str) -> None:
    subprocess.run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            str(src),
            "-L",
            label,
            "-U",
            fs_uuid,
            "-E",
            "root_owner=0:0",
            str(img),
            f"{size_mb}M",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _protofile(src: Path) -> str:
    lines = ["/dev/null", "0 0", "d--755 0 0"]

    def walk(d: Path, depth: int) -> None:
        ind = " " * depth
        for p in sorted(d.iterdir()):
            name = p.name
            if p.is_symlink():
                lines.append(f"{ind}{name} l--777 0 0 {os.readlink(p)}")
            elif p.is_dir():
                lines.append(f"{ind}{name} d--{p.stat().st_mode & 0o777:03o} 0 0")
                walk(p, depth + 1)
                lines.append(f"{ind}$")
            else:
                lines.append(f"{ind}{name} ---{p.stat().st_mode & 0o777:03o} 0 0 {p}")

    walk(src, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def mkfs_xfs(src: Path, img: Path, size_mb: int, label: str, fs_uuid: str) -> None:
    """mkfs.xfs -p protofile; the fstests variables allow a file system under 300 MB."""
    proto = img.with_suffix(".proto")
    proto.write_text(_protofile(src))
    with open(img, "wb") as fh:
        fh.truncate(size_mb * MiB)
    env = dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1")
    subprocess.run(
        ["mkfs.xfs", "-q", "-f", "-L", label, "-m", f"uuid={fs_uuid}", "-p", str(proto), str(img)],
        check=True,
        env=env,
    )
    proto.unlink()


# ---------------------------------------------------------------------------------------
# LVM2: one PV, one VG, linear LVs (format as lvm2 writes it; read back by dissect.volume)
# ---------------------------------------------------------------------------------------
def _lvm_crc(data: bytes) -> int:
    """LVM's CRC: CRC-32 (reflected) with initial value 0xf597a6cf and no final xor."""
    return (binascii.crc32(data, 0xF597A6CF ^ 0xFFFFFFFF) ^ 0xFFFFFFFF) & 0xFFFFFFFF


def _lvm_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#"
    raw = os.urandom(32)
    s = "".join(alphabet[b % 62] for b in raw)
    return s


def _fmt_id(s: str) -> str:
    return "-".join([s[0:6], s[6:10], s[10:14], s[14:18], s[18:22], s[22:26], s[26:32]])


def lvm_pv(vg: str, lvs: list[tuple[str, bytes | Path]], extent_mb: int = 4) -> bytes | Path:
    """A whole LVM2 physical volume holding ``lvs`` (name, image file), as bytes in a file."""
    data_start = MiB  # pe_start: 2048 sectors, lvm2's default
    ext = extent_mb * MiB
    pv_id, vg_id = _lvm_id(), _lvm_id()
    sizes = []
    for _name, img in lvs:
        size = Path(img).stat().st_size
        sizes.append((size + ext - 1) // ext)
    pe_count = sum(sizes)
    dev_size = data_start + pe_count * ext
    lv_text = []
    start = 0
    for (name, _img), count in zip(lvs, sizes, strict=True):
        lv_text.append(f"""{name} {{
id = "{_fmt_id(_lvm_id())}"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1

segment1 {{
start_extent = 0
extent_count = {count}

type = "striped"
stripe_count = 1

stripes = [
"pv0", {start}
]
}}
}}
""")
        start += count
    meta = (
        f"""{vg} {{
id = "{_fmt_id(vg_id)}"
seqno = 1
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = {ext // 512}
max_lv = 0
max_pv = 0
metadata_copies = 0

physical_volumes {{

pv0 {{
id = "{_fmt_id(pv_id)}"
device = "/dev/sda2"

status = ["ALLOCATABLE"]
flags = []
dev_size = {dev_size // 512}
pe_start = {data_start // 512}
pe_count = {pe_count}
}}
}}

logical_volumes {{

{"".join(lv_text)}}}
}}
# Generated by offline-ic test data builder

contents = "Text Format Volume Group"
version = 1

description = ""

creation_host = "testbuilder"
creation_time = 1700000000
""".encode()
        + b"\0"
    )
    mda_start, mda_size = 4096, data_start - 4096
    out = bytearray(data_start)
    # label header (sector 1) + pv header
    pvh = pv_id.encode() + struct.pack("<Q", dev_size)
    pvh += struct.pack("<QQ", data_start, 0) + struct.pack("<QQ", 0, 0)  # data areas
    pvh += struct.pack("<QQ", mda_start, mda_size) + struct.pack("<QQ", 0, 0)  # metadata areas
    label = bytearray(512)
    label[0:8] = b"LABELONE"
    struct.pack_into("<Q", label, 8, 1)
    struct.pack_into("<I", label, 20, 32)
    label[24:32] = b"LVM2 001"
    label[32 : 32 + len(pvh)] = pvh
    struct.pack_into("<I", label, 16, _lvm_crc(bytes(label[20:])))
    out[512:1024] = label
    # metadata area header + text at mda_start + 512
    text_off = 512
    mdah = bytearray(512)
    mdah[4:20] = b" LVM2 x[5A%r0N*>"
    struct.pack_into("<IQQ", mdah, 20, 1, mda_start, mda_size)
    struct.pack_into("<QQII", mdah, 40, text_off, len(meta), _lvm_crc(meta), 0)
    struct.pack_into("<I", mdah, 0, _lvm_crc(bytes(mdah[4:])))
    out[mda_start : mda_start + 512] = mdah
    out[mda_start + text_off : mda_start + text_off + len(meta)] = meta
    pv_path = Path(tempfile.mktemp(suffix=".pv", dir=Path(lvs[0][1]).parent))
    with open(pv_path, "wb") as fh:
        fh.write(out)
        for (_name, img), count in zip(lvs, sizes, strict=True):
            pos = fh.tell()
            with open(img, "rb") as src:
                shutil.copyfileobj(src, fh, 4 * MiB)
            fh.seek(pos + count * ext)
        fh.truncate(dev_size)
    return pv_path


# ---------------------------------------------------------------------------------------
# disks
# ---------------------------------------------------------------------------------------
GPT_TYPES = {
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "lvm": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
}


def make_disk(out: Path, parts: list[tuple[str, Path]], label: str = "gpt") -> Path:
    """A raw disk with a partition table (sfdisk) and the given partition images in it."""
    offset = MiB
    layout = []
    for kind, img in parts:
        size = (Path(img).stat().st_size + MiB - 1) // MiB * MiB
        layout.append((offset, size, kind, img))
        offset += size
    total = offset + MiB
    with open(out, "wb") as fh:
        fh.truncate(total)
    if label == "gpt":
        script = "label: gpt\n" + "".join(
            f"start={o // 512}, size={s // 512}, type={GPT_TYPES[k]}\n" for o, s, k, _ in layout
        )
    else:
        codes = {"linux": "83", "lvm": "8e", "esp": "ef"}
        script = "label: dos\n" + "".join(
            f"start={o // 512}, size={s // 512}, type={codes[k]}\n" for o, s, k, _ in layout
        )
    subprocess.run(
        ["sfdisk", "-q", str(out)], input=script.encode(), check=True, stdout=subprocess.DEVNULL
    )
    with open(out, "r+b") as fh:
        for o, _s, _k, img in layout:
            fh.seek(o)
            with open(img, "rb") as src:
                while True:
                    chunk = src.read(4 * MiB)
                    if not chunk:
                        break
                    if chunk.count(0) == len(chunk):
                        fh.seek(len(chunk), os.SEEK_CUR)  # keep the image sparse
                    else:
                        fh.write(chunk)
    return out


# ---------------------------------------------------------------------------------------
# guest trees
# ---------------------------------------------------------------------------------------
def unpack_parts(dest: Path, parts: Path = PARTS) -> Path:
    """Unpack the real Debian parts once into ``dest``: ``root/``, ``initrd/``, ``hvd612/``."""
    base = dest / "debian12"
    if not (base / ".complete").exists():
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        with tarfile.open(parts) as tar:
            tar.extractall(base, filter="tar")
        (base / ".complete").write_text("ok\n")
    return base


def write_file(root: Path, rel: str, text: str | bytes, mode: int = 0o644) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink() or p.exists():
        p.unlink()
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    p.chmod(mode)


def make_link(root: Path, rel: str, target: str) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink() or p.exists():
        p.unlink()
    os.symlink(target, p)


def remove_path(root: Path, rel: str) -> None:
    p = root / rel.lstrip("/")
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def grub_cfg(entries: list[tuple[str, str, str]], root_uuid: str) -> str:
    """A grub.cfg shaped like grub-mkconfig's: (title, kernel version, extra options)."""
    out = [
        "# generated like /etc/grub.d/10_linux",
        'set default="0"',
        "if [ -s $prefix/grubenv ]; then",
        "  load_env",
        "fi",
        "",
    ]
    first, *rest = entries
    title, ver, extra = first
    out += [
        f"menuentry '{title}' --class debian $menuentry_id_option 'gnulinux-simple-{root_uuid}' {{",
        f"\tlinux\t/boot/vmlinuz-{ver} root=UUID={root_uuid} ro {extra}".rstrip(),
        f"\tinitrd\t/boot/initrd.img-{ver}",
        "}",
    ]
    out.append(
        f"submenu 'Advanced options' $menuentry_id_option 'gnulinux-advanced-{root_uuid}' {{"
    )
    for title, ver, extra in entries:
        out += [
            f"\tmenuentry '{title}' $menuentry_id_option 'gnulinux-{ver}-advanced-{root_uuid}' {{",
            f"\t\tlinux\t/boot/vmlinuz-{ver} root=UUID={root_uuid} ro {extra}".rstrip(),
            f"\t\tinitrd\t/boot/initrd.img-{ver}",
            "\t}",
        ]
    out.append("}")
    del rest
    return "\n".join(out) + "\n"


def kvp_pool(records: dict[str, str]) -> bytes:
    """A KVP pool file as hv_kvp_daemon writes it: key[512] + value[2048], NUL padded."""
    return b"".join(
        k.encode().ljust(512, b"\0") + v.encode().ljust(2048, b"\0") for k, v in records.items()
    )


KVP_PARAMETERS = {
    "HostName": "HV-HOST-07",
    "PhysicalHostNameFullyQualified": "hv-host-07.lab.example",
    "VirtualMachineName": "golden-debian12",
    "VirtualMachineId": "5d3f6a2e-1c4b-4f8e-9a7d-2b6c8e0f1a3d",
}
KVP_EXTERNAL = {"BuildId": "2024.06.1", "Owner": "ci-pipeline"}


ROOT_UUID = "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
BOOT_UUID = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"


def debian_tree(
    base: Path, work: Path, kernels: tuple[str, ...] = (K61,), initrd: dict[str, str] | None = None
) -> Path:
    """A Debian 12 root: the real parts, with the chosen kernels and initramfs variants."""
    root = work / "root"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(base / "root", root, symlinks=True)
    initrd = initrd or {K61: "initrd-good.img", K612: "initrd-612.img"}
    for k in (K61, K612):
        if k not in kernels:
            remove_path(root, f"/usr/lib/modules/{k}")
            remove_path(root, f"/boot/vmlinuz-{k}")
            remove_path(root, f"/boot/config-{k}")
            remove_path(root, f"/boot/System.map-{k}")
        else:
            src = base / "initrd" / initrd[k]
            shutil.copyfile(src, root / "boot" / f"initrd.img-{k}")
    entries = [(f"Debian GNU/Linux, with Linux {k}", k, "quiet") for k in kernels]
    write_file(root, "/boot/grub/grub.cfg", grub_cfg(entries, ROOT_UUID))
    write_file(
        root,
        "/etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null`\n"
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n',
    )
    write_file(root, "/etc/fstab", f"# /etc/fstab\nUUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n")
    pools = {0: KVP_EXTERNAL, 1: {}, 2: {"OSName": "Debian GNU/Linux"}, 3: KVP_PARAMETERS, 4: {}}
    for index, records in pools.items():
        write_file(root, f"/var/lib/hyperv/.kvp_pool_{index}", kvp_pool(records))
    return root


def single_ext4_disk(root: Path, out: Path, size_mb: int = 96) -> Path:
    fs = out.with_suffix(".fs")
    mkfs_ext4(root, fs, size_mb, "root", ROOT_UUID)
    make_disk(out, [("linux", fs)])
    fs.unlink()
    return out


# --- family layouts on top of the Debian parts (units and rules as design.md lists them) ---
def to_ubuntu(root: Path, base: Path) -> None:
    """Ubuntu: the real linux-cloud-tools-common (wrappers, units, udev rules) + per-kernel
    tools in /usr/lib/linux-tools/<kver> (Debian's binaries of the same upstream tools stand
    in for linux-cloud-tools-<kver>), units enabled by wants symlinks as its postinst does."""
    write_file(
        root,
        "/usr/lib/os-release",
        'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
        "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=jammy\n",
    )
    remove_path(root, "/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
    for d in ("kvp", "vss", "fcopy"):
        remove_path(root, f"/usr/lib/systemd/system/hv-{d}-daemon.service")
        per_kernel = root / f"usr/lib/linux-tools/{K61}/hv_{d}_daemon"
        per_kernel.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / f"usr/sbin/hv_{d}_daemon", per_kernel)
    shutil.copytree(base / "ubuntu-lctc", root, symlinks=True, dirs_exist_ok=True)
    for d in ("kvp", "vss", "fcopy"):
        unit = f"hv-{d}-daemon.service"
        make_link(
            root,
            f"/etc/systemd/system/multi-user.target.wants/{unit}",
            f"/lib/systemd/system/{unit}",
        )


def to_suse(root: Path, kernel: str) -> None:
    """SUSE: hyper-v package: binaries in /usr/lib/hyper-v/bin, hv_*_daemon units, udev rule."""
    write_file(
        root,
        "/usr/lib/os-release",
        'NAME="SLES"\nVERSION="15-SP6"\nVERSION_ID="15.6"\nPRETTY_NAME="SUSE Linux '
        'Enterprise Server 15 SP6"\nID="sles"\nID_LIKE="suse"\n',
    )
    remove_path(root, "/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
    uio = kernel == K612
    rules = []
    for d in ("kvp", "vss", "fcopy"):
        name = "hv_fcopy_uio_daemon" if (d == "fcopy" and uio) else f"hv_{d}_daemon"
        src = root / f"usr/sbin/hv_{d}_daemon"
        dst = root / f"usr/lib/hyper-v/bin/{name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.exists():
            shutil.move(src, dst)
        else:  # Debian's 6.12 package has no file-copy daemon: reuse kvp's bytes as a stand-in
            shutil.copyfile(root / "usr/lib/hyper-v/bin/hv_kvp_daemon", dst)
            dst.chmod(0o755)
        remove_path(root, f"/usr/lib/systemd/system/hv-{d}-daemon.service")
        write_file(
            root,
            f"/usr/lib/systemd/system/{name}.service",
            f"[Unit]\nDescription=Hyper-V {d} daemon\nConditionVirtualization=microsoft\n\n"
            f"[Service]\nExecStart=/usr/lib/hyper-v/bin/{name} -n\n\n"
            f"[Install]\nWantedBy=default.target\n",
        )
        dev = (
            'SUBSYSTEM=="uio", ATTR{name}=="uio_hv_generic"'
            if name.endswith("uio_daemon")
            else f'KERNEL=="vmbus/hv_{d}"'
        )
        rules.append(f'{dev}, TAG+="systemd", ENV{{SYSTEMD_WANTS}}+="{name}.service"')
    write_file(root, "/usr/lib/udev/rules.d/hyper-v.rules", "\n".join(rules) + "\n")


def to_rhel(root: Path) -> None:
    """RHEL-like: hyperv-daemons as hypervkvpd/vssd/fcopyd, started by 70-hyperv-*.rules only."""
    write_file(
        root,
        "/usr/lib/os-release",
        'NAME="AlmaLinux"\nVERSION="9.4 (Seafoam Ocelot)"\nID="almalinux"\n'
        'ID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
        'PRETTY_NAME="AlmaLinux 9.4 (Seafoam Ocelot)"\n',
    )
    remove_path(root, "/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
    names = {"kvp": "hypervkvpd", "vss": "hypervvssd", "fcopy": "hypervfcopyd"}
    for d, name in names.items():
        shutil.move(root / f"usr/sbin/hv_{d}_daemon", root / f"usr/sbin/{name}")
        remove_path(root, f"/usr/lib/systemd/system/hv-{d}-daemon.service")
        write_file(
            root,
            f"/usr/lib/systemd/system/{name}.service",
            f"[Unit]\nDescription=Hyper-V {d.upper()} daemon\n"
            f"BindsTo=sys-devices-virtual-misc-vmbus\\x21hv_{d}.device\n\n"
            f"[Service]\nType=simple\nExecStart=/usr/sbin/{name} -n\n",
        )
        write_file(
            root,
            f"/usr/lib/udev/rules.d/70-hv_{d}.rules",
            f'ACTION=="add", KERNEL=="vmbus/hv_{d}", TAG+="systemd", '
            f'ENV{{SYSTEMD_WANTS}}+="{name}.service"\n',
        )


def to_arch(root: Path) -> None:
    """Arch: /boot files named after pkgbase, package hyperv (kvp, vss), enabled by hand."""
    write_file(
        root,
        "/usr/lib/os-release",
        'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\n',
    )
    write_file(root, f"/usr/lib/modules/{K61}/pkgbase", "linux\n")
    os.rename(root / f"boot/vmlinuz-{K61}", root / "boot/vmlinuz-linux")
    os.rename(root / f"boot/initrd.img-{K61}", root / "boot/initramfs-linux.img")
    remove_path(root, f"/boot/config-{K61}")
    write_file(
        root,
        "/boot/grub/grub.cfg",
        grub_cfg([("Arch Linux", "linux", "rw")], ROOT_UUID).replace(
            "initrd.img-linux", "initramfs-linux.img"
        ),
    )
    remove_path(root, "/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
    for d in ("kvp", "vss", "fcopy"):
        remove_path(root, f"/usr/lib/systemd/system/hv-{d}-daemon.service")
        if d == "fcopy":
            remove_path(root, "/usr/sbin/hv_fcopy_daemon")
            continue
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        shutil.move(root / f"usr/sbin/hv_{d}_daemon", root / f"usr/bin/hv_{d}_daemon")
        write_file(
            root,
            f"/usr/lib/systemd/system/hv_{d}_daemon.service",
            f"[Unit]\nDescription=Hyper-V {d.upper()} Protocol Daemon\n"
            f"ConditionVirtualization=microsoft\n\n[Service]\n"
            f"ExecStart=/usr/bin/hv_{d}_daemon -n\n\n[Install]\nWantedBy=multi-user.target\n",
        )
    make_link(
        root,
        "/etc/systemd/system/multi-user.target.wants/hv_kvp_daemon.service",
        "/usr/lib/systemd/system/hv_kvp_daemon.service",
    )


def mkfs_btrfs(src: Path, img: Path, size_mb: int, label: str, fs_uuid: str) -> None:
    with open(img, "wb") as fh:
        fh.truncate(size_mb * MiB)
    subprocess.run(
        ["mkfs.btrfs", "-q", "-f", "-L", label, "-U", fs_uuid, "--rootdir", str(src), str(img)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def case_arch_btrfs(base: Path, work: Path, out: Path) -> Path:
    root = debian_tree(base, work)
    to_arch(root)
    fs = out.with_suffix(".fs")
    mkfs_btrfs(root, fs, 160, "arch", ROOT_UUID)
    make_disk(out, [("linux", fs)])
    fs.unlink()
    return out


def rhel_tree(base: Path, work: Path, dracut: str = "dracut-good.img") -> Path:
    """A RHEL-like root (AlmaLinux 9 names, BLS entries, grubenv) from the Debian parts.

    The initramfs is a real dracut output, named as dracut does: /boot/initramfs-<ver>.img.
    """
    root = debian_tree(base, work)
    to_rhel(root)
    remove_path(root, f"/boot/initrd.img-{K61}")
    shutil.copyfile(base / "initrd" / dracut, root / f"boot/initramfs-{K61}.img")
    remove_path(root, "/boot/grub")
    remove_path(root, "/etc/default/grub")
    write_file(
        root,
        "/etc/default/grub",
        "GRUB_DEFAULT=saved\nGRUB_ENABLE_BLSCFG=true\n"
        'GRUB_CMDLINE_LINUX="crashkernel=auto resume=/dev/mapper/almalinux-swap '
        'rd.lvm.lv=almalinux/root"\n',
    )
    mid = "0123456789abcdef0123456789abcdef"
    write_file(
        root,
        f"/boot/loader/entries/{mid}-{K61}.conf",
        f"title AlmaLinux ({K61}) 9.4\nversion {K61}\nlinux /vmlinuz-{K61}\n"
        f"initrd /initramfs-{K61}.img $tuned_initrd\n"
        f"options root=/dev/mapper/almalinux-root ro rd.lvm.lv=almalinux/root\n"
        f"grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class almalinux\n",
    )
    write_file(
        root,
        "/boot/grub2/grubenv",
        (f"# GRUB Environment Block\nsaved_entry={mid}-{K61}\n").ljust(1024, "#"),
    )
    write_file(
        root,
        "/etc/fstab",
        "/dev/mapper/almalinux-root /                       xfs     defaults        0 0\n"
        f"UUID={BOOT_UUID} /boot                   xfs     defaults        0 0\n",
    )
    return root


def rhel_disk(base: Path, work: Path, out: Path, dracut: str = "dracut-good.img") -> Path:
    """/boot (xfs, partition 1) + LVM PV (partition 2) with VG almalinux, LV root (xfs)."""
    root = rhel_tree(base, work, dracut)
    boot = work / "boot"
    if boot.exists():
        shutil.rmtree(boot)
    shutil.move(root / "boot", boot)
    (root / "boot").mkdir()
    bootfs, rootfs = work / "boot.xfs", work / "root.xfs"
    mkfs_xfs(boot, bootfs, 64, "boot", BOOT_UUID)
    mkfs_xfs(root, rootfs, 128, "root", ROOT_UUID)
    pv = lvm_pv("almalinux", [("root", rootfs)])
    make_disk(out, [("linux", bootfs), ("lvm", Path(pv))])
    for p in (bootfs, rootfs, Path(pv)):
        p.unlink()
    return out


# ---------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------
def case_debian_good(base: Path, work: Path, out: Path) -> Path:
    return single_ext4_disk(debian_tree(base, work), out)


def case_debian_two_kernels(base: Path, work: Path, out: Path) -> Path:
    """6.12 (default, first in grub.cfg) and 6.1 installed."""
    return single_ext4_disk(debian_tree(base, work, kernels=(K612, K61)), out, 128)


def case_blacklisted(base: Path, work: Path, out: Path) -> Path:
    """hv_utils blacklisted in /etc/modprobe.d (and so in the real initramfs made with it)."""
    root = debian_tree(base, work, initrd={K61: "initrd-blacklist.img"})
    write_file(root, "/etc/modprobe.d/zz-test-blacklist.conf", "blacklist hv_utils\n")
    return single_ext4_disk(root, out)


def case_masked_blacklist(base: Path, work: Path, out: Path) -> Path:
    """/usr/lib blacklists hv_utils, but /etc masks that file (same name, /dev/null)."""
    root = debian_tree(base, work)
    write_file(
        root, "/usr/lib/modprobe.d/hyperv-off.conf", "# vendor\ninstall hv_utils /bin/false\n"
    )
    make_link(root, "/etc/modprobe.d/hyperv-off.conf", "/dev/null")
    return single_ext4_disk(root, out)


def case_cmdline_blacklist(base: Path, work: Path, out: Path) -> Path:
    root = debian_tree(base, work)
    text = (
        (root / "boot/grub/grub.cfg")
        .read_text()
        .replace("ro quiet", "ro quiet modprobe.blacklist=hv_netvsc,hv_balloon", 1)
    )
    write_file(root, "/boot/grub/grub.cfg", text)
    return single_ext4_disk(root, out)


def case_no_storvsc(base: Path, work: Path, out: Path) -> Path:
    """A real mkinitramfs output whose module list lacks hv_storvsc."""
    return single_ext4_disk(debian_tree(base, work, initrd={K61: "initrd-nostorvsc.img"}), out)


def case_daemons_missing(base: Path, work: Path, out: Path) -> Path:
    root = debian_tree(base, work)
    for d in ("kvp", "vss", "fcopy"):
        remove_path(root, f"/usr/sbin/hv_{d}_daemon")
        remove_path(root, f"/usr/lib/systemd/system/hv-{d}-daemon.service")
    remove_path(root, "/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
    return single_ext4_disk(root, out)


def case_daemons_masked(base: Path, work: Path, out: Path) -> Path:
    root = debian_tree(base, work)
    for d in ("kvp", "vss"):
        make_link(root, f"/etc/systemd/system/hv-{d}-daemon.service", "/dev/null")
    make_link(root, "/etc/udev/rules.d/60-hyperv-daemons.rules", "/dev/null")  # fcopy: not started
    return single_ext4_disk(root, out)


def case_debian_612_trixie_daemons(base: Path, work: Path, out: Path) -> Path:
    """Kernel 6.12 with Debian 13's hyperv-daemons 6.12 (kvp, vss; no file-copy daemon)."""
    root = debian_tree(base, work, kernels=(K612,))
    for d in ("kvp", "vss", "fcopy"):
        remove_path(root, f"/usr/sbin/hv_{d}_daemon")
        remove_path(root, f"/usr/lib/systemd/system/hv-{d}-daemon.service")
    remove_path(root, "/usr/lib/udev/rules.d/60-hyperv-daemons.rules")
    shutil.copytree(base / "hvd612", root, symlinks=True, dirs_exist_ok=True)
    return single_ext4_disk(root, out)


def case_debian_split_usr(base: Path, work: Path, out: Path) -> Path:
    """/usr on its own volume (fstab LABEL=), /boot on another (fstab UUID=), MBR disk:
    /etc/os-release and /lib -> usr/lib cross onto the /usr volume."""
    root = debian_tree(base, work)
    write_file(
        root,
        "/etc/fstab",
        f"UUID={ROOT_UUID} / ext4 defaults 0 1\n"
        f"UUID={BOOT_UUID} /boot ext4 defaults 0 2\nLABEL=usr /usr ext4 defaults 0 2\n"
        "UUID=0badc0de-0000-4000-8000-000000000000 /var ext4 defaults,nofail 0 2\n",
    )
    usr, boot = work / "usr", work / "boot"
    for d in (usr, boot):
        if d.exists():
            shutil.rmtree(d)
    shutil.move(root / "usr", usr)
    shutil.move(root / "boot", boot)
    (root / "usr").mkdir()
    (root / "boot").mkdir()
    fs_root, fs_boot, fs_usr = (work / n for n in ("root.fs", "boot.fs", "usr.fs"))
    mkfs_ext4(root, fs_root, 16, "root", ROOT_UUID)
    mkfs_ext4(boot, fs_boot, 32, "boot", BOOT_UUID)
    mkfs_ext4(usr, fs_usr, 48, "usr", str(uuid.uuid4()))
    make_disk(out, [("linux", fs_boot), ("linux", fs_usr), ("linux", fs_root)], label="dos")
    for p in (fs_root, fs_boot, fs_usr):
        p.unlink()
    return out


def case_ubuntu(base: Path, work: Path, out: Path) -> Path:
    root = debian_tree(base, work)
    to_ubuntu(root, base)
    return single_ext4_disk(root, out)


def case_ubuntu_no_cloud_tools(base: Path, work: Path, out: Path) -> Path:
    """linux-cloud-tools-common without linux-cloud-tools-<kver>: the wrappers exec nothing."""
    root = debian_tree(base, work)
    to_ubuntu(root, base)
    remove_path(root, "/usr/lib/linux-tools")
    return single_ext4_disk(root, out)


def case_suse_612(base: Path, work: Path, out: Path) -> Path:
    """SUSE-like on kernel 6.12: hv_fcopy_uio_daemon, /boot/initrd-<ver> naming."""
    root = debian_tree(base, work, kernels=(K612,))
    to_suse(root, K612)
    os.rename(root / f"boot/initrd.img-{K612}", root / f"boot/initrd-{K612}")
    remove_path(root, "/boot/grub")
    return single_ext4_disk(root, out)


def case_debian_612_old_fcopy(base: Path, work: Path, out: Path) -> Path:
    """Kernel 6.12 with the 6.1 hyperv-daemons (hv_fcopy_daemon, useless from 6.10 on)."""
    return single_ext4_disk(debian_tree(base, work, kernels=(K612,)), out)


def case_rhel_lvm(base: Path, work: Path, out: Path) -> Path:
    return rhel_disk(base, work, out)


def case_rhel_rd_blacklist(base: Path, work: Path, out: Path) -> Path:
    """dracut --kernel-cmdline rd.driver.blacklist=hv_storvsc: inside the initramfs only."""
    return rhel_disk(base, work, out, "dracut-rdblacklist.img")


def case_garbage_initramfs(base: Path, work: Path, out: Path) -> Path:
    root = debian_tree(base, work)
    write_file(root, f"/boot/initrd.img-{K61}", b"this is not an initramfs\n" * 100)
    return single_ext4_disk(root, out)


def case_truncated_initramfs(base: Path, work: Path, out: Path) -> Path:
    root = debian_tree(base, work)
    p = root / f"boot/initrd.img-{K61}"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return single_ext4_disk(root, out)


def case_symlink_loop(base: Path, work: Path, out: Path) -> Path:
    """os-release loops, modprobe.d and a unit point outside the guest root."""
    root = debian_tree(base, work)
    make_link(root, "/etc/os-release", "/etc/os-release.d/loop")
    make_link(root, "/etc/os-release.d/loop", "../os-release")
    make_link(root, "/etc/modprobe.d/escape.conf", "../../../../../../etc/passwd")
    make_link(root, "/etc/systemd/system/hv-kvp-daemon.service", "/../../../../root/outside")
    return single_ext4_disk(root, out)


def case_no_os(base: Path, work: Path, out: Path) -> Path:
    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    write_file(data, "/hello.txt", "just data\n")
    fs = work / "data.fs"
    mkfs_ext4(data, fs, 16, "data", str(uuid.uuid4()))
    make_disk(out, [("linux", fs)])
    fs.unlink()
    return out


CASES: dict[str, Callable[[Path, Path, Path], Path]] = {
    "debian-good": case_debian_good,
    "debian-two-kernels": case_debian_two_kernels,
    "debian-blacklisted": case_blacklisted,
    "debian-masked-blacklist": case_masked_blacklist,
    "debian-cmdline-blacklist": case_cmdline_blacklist,
    "debian-no-storvsc": case_no_storvsc,
    "debian-daemons-missing": case_daemons_missing,
    "debian-daemons-masked": case_daemons_masked,
    "debian-612-old-fcopy": case_debian_612_old_fcopy,
    "debian-612-trixie-daemons": case_debian_612_trixie_daemons,
    "debian-split-usr": case_debian_split_usr,
    "ubuntu-good": case_ubuntu,
    "ubuntu-no-cloud-tools": case_ubuntu_no_cloud_tools,
    "suse-612": case_suse_612,
    "rhel-lvm-xfs": case_rhel_lvm,
    "rhel-rd-blacklist": case_rhel_rd_blacklist,
    "arch-btrfs": case_arch_btrfs,
    "bad-garbage-initramfs": case_garbage_initramfs,
    "bad-truncated-initramfs": case_truncated_initramfs,
    "bad-symlinks": case_symlink_loop,
    "bad-no-os": case_no_os,
}


def build(outdir: Path, names: list[str] | None = None, parts: Path = PARTS) -> dict[str, Path]:
    """Build the named cases (all by default) into ``outdir``; returns name -> raw image."""
    outdir.mkdir(parents=True, exist_ok=True)
    base = unpack_parts(outdir / "_parts", parts)
    out = {}
    for name in names or list(CASES):
        img = outdir / f"{name}.raw"
        if not img.exists():
            work = outdir / f"_work-{name}"
            work.mkdir(exist_ok=True)
            tmp = outdir / f"{name}.raw.tmp"
            try:
                CASES[name](base, work, tmp)
            except FileNotFoundError as exc:  # a mkfs tool that is not installed
                print(f"{name}: skipped ({exc.filename} not installed)", file=sys.stderr)
                shutil.rmtree(work)
                continue
            os.replace(tmp, img)
            shutil.rmtree(work)
        out[name] = img
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    outdir, names = Path(argv[0]), argv[1:] or None
    for name, path in build(outdir, names).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

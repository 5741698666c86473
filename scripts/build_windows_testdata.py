#!/usr/bin/env python3
"""Build the Windows test images in testdata/windows/ from real parts.

Parts: real hives made by Windows (MIT, regipy's, in testdata/hives with their provenance),
changed only with hivex (an independent writer); NTFS made by mkntfs and filled through
ntfs-3g (FUSE); partition tables by sfdisk; VHDX/VHD by qemu-img. Needs root (FUSE mount)
and the Debian packages in scripts/debian-packages.txt.

    scripts/build_windows_testdata.py            # rebuild everything into testdata/windows
    scripts/build_windows_testdata.py --out DIR  # somewhere else (tests use this for big images)

Every image's content is listed in testdata/windows/README.md; tests assert those facts.
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The MIT hives from regipy (provenance: testdata/hives/PROVENANCE.md), committed in this repo.
REAL_HIVES = REPO / "testdata" / "hives"
SOFTWARE_REG = REPO / "scripts" / "windows_software.reg"
SYSTEM_CHANGES_REG = REPO / "scripts" / "windows_system_changes.reg"
MiB = 1024 * 1024


def run(*cmd: str | os.PathLike, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def unxz(src: Path, dest: Path) -> Path:
    with lzma.open(src) as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dest


def merge_reg(hive: Path, reg: Path, prefix: str) -> None:
    """Apply a .reg file with hivexregedit (hivex commits: the result is a clean hive)."""
    run("hivexregedit", "--merge", "--prefix", prefix, hive, reg)


def build_hives(work: Path) -> dict[str, Path]:
    """The hives that go into the images, built from the real ones."""
    hives: dict[str, Path] = {}
    # Windows 10 1709 SYSTEM: the primary file of a real dirty hive, committed by hivex with a
    # few known changes (vmictimesync disabled, vmicrdv removed). hivex does not replay the
    # logs, so this is the hive as of the primary's last flush: consistent and clean, and
    # deliberately not the recovered state (that is tested from ../shared with the logs).
    system10 = unxz(REAL_HIVES / "regipy_SYSTEM_B.xz", work / "SYSTEM-win10")
    merge_reg(system10, SYSTEM_CHANGES_REG, "HKEY_LOCAL_MACHINE\\SYSTEM")
    hives["SYSTEM-win10"] = system10
    # The same real hive left dirty, with its real transaction logs.
    for suffix in ("", ".LOG1", ".LOG2"):
        unxz(REAL_HIVES / f"regipy_SYSTEM_B{suffix}.xz", work / f"SYSTEM-win10-dirty{suffix}")
    hives["SYSTEM-win10-dirty"] = work / "SYSTEM-win10-dirty"
    # Windows 7 SP1 SYSTEM: not a Hyper-V guest, no vmic* services; untouched.
    hives["SYSTEM-win7"] = unxz(REAL_HIVES / "regipy_SYSTEM.xz", work / "SYSTEM-win7")
    # SOFTWARE with the KVP keys: a real small hive (SAM) emptied and filled by hivex.
    software = unxz(REAL_HIVES / "regipy_SAM.xz", work / "SOFTWARE")
    merge_reg(software, SOFTWARE_REG, "HKEY_LOCAL_MACHINE\\SOFTWARE")
    hives["SOFTWARE"] = software
    return hives


def make_ntfs_volume(path: Path, size: int, start_sector: int, files: dict[str, Path]) -> None:
    """mkntfs a volume file and copy ``files`` (guest path -> host file) into it through ntfs-3g."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    run(
        "mkntfs",
        "-q",
        "-F",
        "-Q",
        "-s",
        "512",
        "-p",
        str(start_sector),
        "-H",
        "255",
        "-S",
        "63",
        "-L",
        "Windows",
        path,
        stderr=subprocess.DEVNULL,
    )
    mnt = Path(tempfile.mkdtemp(prefix="offline-ic-ntfs-"))
    try:
        run("ntfs-3g", path, mnt)
        try:
            for guest_path, src in files.items():
                dest = mnt / guest_path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
        finally:
            run("umount", mnt)
    finally:
        mnt.rmdir()


def copy_sparse(src: Path, dest_fh, dest_offset: int) -> None:
    """Copy only the data extents of ``src`` (SEEK_DATA/SEEK_HOLE) into ``dest_fh`` at an offset.

    A 127 GiB NTFS volume file is almost all holes; copying it byte by byte would take minutes.
    """
    with open(src, "rb") as fin:
        fd = fin.fileno()
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # no data after pos
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            fin.seek(data)
            dest_fh.seek(dest_offset + data)
            remaining = hole - data
            while remaining:
                chunk = fin.read(min(remaining, 8 * MiB))
                dest_fh.write(chunk)
                remaining -= len(chunk)
            pos = hole


def make_disk(
    path: Path, size: int, label: str, parts: list[tuple[int, int, str, Path | None]]
) -> None:
    """Raw disk with a ``label`` (gpt/dos) table; parts = (start_sector, sectors, type, content)."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    script = f"label: {label}\n" + "".join(
        f"start={start}, size={count}, type={ptype}\n" for start, count, ptype, _ in parts
    )
    run("sfdisk", "-q", path, input=script.encode())
    with open(path, "r+b") as disk:
        for start, _count, _ptype, content in parts:
            if content is None:
                continue
            copy_sparse(content, disk, start * 512)


def windows_files(
    system: Path, software: Path | None, extra: dict[str, Path] | None = None
) -> dict[str, Path]:
    files = {"Windows/System32/config/SYSTEM": system}
    if software is not None:
        files["Windows/System32/config/SOFTWARE"] = software
    files.update(extra or {})
    return files


GPT_BASIC = "EBD0A0A2-B9E5-4433-87C0-68B99B26599C"
GPT_MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
GPT_EFI = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def build_images(out: Path, work: Path) -> list[Path]:
    hives = build_hives(work)
    made: list[Path] = []

    # 1. Windows 10 guest, GPT: EFI (empty) + MSR + NTFS with SYSTEM and SOFTWARE.
    disk_size = 64 * MiB
    ntfs_start, ntfs_sectors = 2048 + 8192 + 32768, 80 * 1024
    vol = work / "win10.ntfs"
    make_ntfs_volume(
        vol, ntfs_sectors * 512, ntfs_start, windows_files(hives["SYSTEM-win10"], hives["SOFTWARE"])
    )
    raw = work / "win10-gpt.raw"
    make_disk(
        raw,
        disk_size,
        "gpt",
        [
            (2048, 8192, GPT_EFI, None),
            (2048 + 8192, 32768, GPT_MSR, None),
            (ntfs_start, ntfs_sectors, GPT_BASIC, vol),
        ],
    )
    for name, opts in (
        ("win10-gpt-dynamic.vhdx", "subformat=dynamic,block_size=2097152"),
        ("win10-gpt-fixed.vhdx", "subformat=fixed"),
    ):
        run("qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o", opts, raw, out / name)
        made.append(out / name)

    # 2. Windows 7 guest, MBR, dynamic VHD: a real Win7 SYSTEM, no SOFTWARE, no vmic* keys.
    vol7 = work / "win7.ntfs"
    make_ntfs_volume(vol7, 40 * MiB, 2048, windows_files(hives["SYSTEM-win7"], None))
    raw7 = work / "win7-mbr.raw"
    make_disk(raw7, 48 * MiB, "dos", [(2048, 40 * 2048, "7", vol7)])
    run(
        "qemu-img",
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "subformat=dynamic",
        raw7,
        out / "win7-mbr.vhd",
    )
    made.append(out / "win7-mbr.vhd")

    # 3. Windows 10 guest whose SYSTEM hive is dirty (real .LOG1/.LOG2 beside it), raw MBR.
    dirty = hives["SYSTEM-win10-dirty"]
    vold = work / "win10-dirty.ntfs"
    make_ntfs_volume(
        vold,
        56 * MiB,
        2048,
        windows_files(
            dirty,
            hives["SOFTWARE"],
            {
                "Windows/System32/config/SYSTEM.LOG1": Path(f"{dirty}.LOG1"),
                "Windows/System32/config/SYSTEM.LOG2": Path(f"{dirty}.LOG2"),
            },
        ),
    )
    rawd = out / "win10-dirty-mbr.raw"
    make_disk(rawd, 60 * MiB, "dos", [(2048, 56 * 2048, "7", vold)])
    made.append(rawd)

    # Bare hives for the hive-level tests.
    for name in ("SYSTEM-win10", "SOFTWARE"):
        shutil.copyfile(hives[name], out / name)
        made.append(out / name)
    return made


# --- the every-hive image (built at test time: tests/windows/conftest.py) ----------------

ALICE_SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
EMPTIED = "[-HKEY_LOCAL_MACHINE\\X\\SAM]\n"  # a copy of the real SAM with its SAM tree removed
EXTRA_HIVES_REG = {
    # the real SOFTWARE of the images plus a ProfileList naming alice and LocalSystem
    "SOFTWARE": f"""
[HKEY_LOCAL_MACHINE\\X\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList]
"ProfilesDirectory"=hex(2):25,00,53,00,79,00,73,00,74,00,65,00,6d,00,44,00,72,00,69,00,76,00,65,00,25,00,5c,00,55,00,73,00,65,00,72,00,73,00,00,00

[HKEY_LOCAL_MACHINE\\X\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList\\S-1-5-18]
"ProfileImagePath"=hex(2):25,00,73,00,79,00,73,00,74,00,65,00,6d,00,72,00,6f,00,6f,00,74,00,25,00,5c,00,73,00,79,00,73,00,74,00,65,00,6d,00,33,00,32,00,5c,00,63,00,6f,00,6e,00,66,00,69,00,67,00,5c,00,73,00,79,00,73,00,74,00,65,00,6d,00,70,00,72,00,6f,00,66,00,69,00,6c,00,65,00,00,00

[HKEY_LOCAL_MACHINE\\X\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList\\{ALICE_SID}]
"ProfileImagePath"=hex(2):43,00,3a,00,5c,00,55,00,73,00,65,00,72,00,73,00,5c,00,61,00,6c,00,69,00,63,00,65,00,00,00
"Flags"=dword:00000000
""",
    "DEFAULT": EMPTIED
    + """
[HKEY_LOCAL_MACHINE\\X\\Control Panel]

[HKEY_LOCAL_MACHINE\\X\\Control Panel\\International]
"sLanguage"="ENU"
"LocaleName"="en-US"
""",
    "COMPONENTS": EMPTIED
    + """
[HKEY_LOCAL_MACHINE\\X\\DerivedData]

[HKEY_LOCAL_MACHINE\\X\\DerivedData\\Components]
"Count"=dword:00000002
""",
    "NTUSER.DAT": EMPTIED
    + """
[HKEY_LOCAL_MACHINE\\X\\Environment]
"TEMP"=hex(2):25,00,55,00,53,00,45,00,52,00,50,00,52,00,4f,00,46,00,49,00,4c,00,45,00,25,00,5c,00,54,00,65,00,6d,00,70,00,00,00

[HKEY_LOCAL_MACHINE\\X\\Software]

[HKEY_LOCAL_MACHINE\\X\\Software\\Contoso]
"Owner"="alice"
""",
    "BCD": EMPTIED
    + """
[HKEY_LOCAL_MACHINE\\X\\Description]
"KeyName"="BCD00000000"

[HKEY_LOCAL_MACHINE\\X\\Objects]

[HKEY_LOCAL_MACHINE\\X\\Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}]

[HKEY_LOCAL_MACHINE\\X\\Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\\Description]
"Type"=dword:10100002
""",
}


def build_every_hive_image(out: Path, work: Path) -> Path:
    """``win10-allhives.vhdx``: the win10 GPT disk with SAM, SECURITY, DEFAULT, COMPONENTS,
    Users/alice/NTUSER.DAT (+ ProfileList) on NTFS and a BCD on a FAT EFI partition.

    SAM and SECURITY are the real regipy hives as they are (SECURITY is dirty without logs);
    DEFAULT, COMPONENTS, NTUSER.DAT and BCD are copies of the real SAM emptied and given the
    keys above by hivexregedit (see testdata/hives/PROVENANCE.md). Needs root (ntfs-3g),
    mkfs.fat and mtools.
    """
    hives = build_hives(work)
    made: dict[str, Path] = {}
    for name, body in EXTRA_HIVES_REG.items():
        src = hives["SOFTWARE"] if name == "SOFTWARE" else REAL_HIVES / "regipy_SAM.xz"
        dest = work / f"extra-{name}"
        if name == "SOFTWARE":
            shutil.copyfile(src, dest)
        else:
            unxz(src, dest)
        reg = work / f"extra-{name}.reg"
        reg.write_text("Windows Registry Editor Version 5.00\n" + body, encoding="utf-8")
        merge_reg(dest, reg, "HKEY_LOCAL_MACHINE\\X")
        made[name] = dest
    config = "Windows/System32/config"
    files = windows_files(
        hives["SYSTEM-win10"],
        made["SOFTWARE"],
        {
            f"{config}/SAM": unxz(REAL_HIVES / "regipy_SAM.xz", work / "SAM"),
            f"{config}/SECURITY": unxz(REAL_HIVES / "regipy_SECURITY.xz", work / "SECURITY"),
            f"{config}/DEFAULT": made["DEFAULT"],
            f"{config}/COMPONENTS": made["COMPONENTS"],
            "Users/alice/NTUSER.DAT": made["NTUSER.DAT"],
        },
    )
    ntfs_start, ntfs_sectors = 2048 + 8192 + 32768, 80 * 1024
    vol = work / "allhives.ntfs"
    make_ntfs_volume(vol, ntfs_sectors * 512, ntfs_start, files)
    esp = work / "esp.fat"
    with open(esp, "wb") as fh:
        fh.truncate(8192 * 512)
    run("mkfs.fat", "-F", "12", "-n", "ESP", esp, stdout=subprocess.DEVNULL)
    for folder in ("::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot"):
        run("mmd", "-i", esp, folder)
    run("mcopy", "-i", esp, made["BCD"], "::/EFI/Microsoft/Boot/BCD")
    raw = work / "allhives.raw"
    make_disk(
        raw,
        64 * MiB,
        "gpt",
        [
            (2048, 8192, GPT_EFI, esp),
            (2048 + 8192, 32768, GPT_MSR, None),
            (ntfs_start, ntfs_sectors, GPT_BASIC, vol),
        ],
    )
    image = out / "win10-allhives.vhdx"
    opts = "subformat=dynamic,block_size=2097152"
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o", opts, raw, image)
    return image


def compress(paths: list[Path]) -> None:
    for path in paths:
        run("xz", "-9", "-T0", "-f", path)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=REPO / "testdata" / "windows")
    ap.add_argument("--no-compress", action="store_true", help="leave the images uncompressed")
    args = ap.parse_args()
    if not REAL_HIVES.is_dir():
        print(f"error: {REAL_HIVES} not found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="offline-ic-build-") as tmp:
        made = build_images(args.out, Path(tmp))
    if not args.no_compress:
        compress(made)
    for p in sorted(args.out.iterdir()):
        print(f"{p.stat().st_size:>10}  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Build the hostile NTFS disks of testdata/ntfs/link-loop-*.raw.xz: symbolic-link loops.

Each is a 4 MiB raw disk, an MBR (sfdisk) with one NTFS partition at sector 2048 made by
mkntfs, in which ``Windows`` is an NTFS symbolic link (reparse tag 0xA000000C, relative)
written by ntfs-3g through its ``system.ntfs_reparse_data`` attribute:

* ``self``: ``Windows`` -> ``Windows`` (dissect.ntfs's path walk never ends);
* ``pair``: ``Windows`` -> ``Win2`` and ``Win2`` -> ``Windows``;
* ``deep``: ``Windows`` -> ``Windows\\System32`` (each resolution starts the walk again).

Needs root and FUSE (ntfs-3g), sfdisk, xz.

    scripts/build_ntfs_loops.py            # rebuild into testdata/ntfs
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_windows_testdata import REPO, MiB, make_disk, run  # noqa: E402 - not a package

IO_REPARSE_TAG_SYMLINK = 0xA000000C
SYMLINK_FLAG_RELATIVE = 1
LOOPS = {
    "self": {"Windows": "Windows"},
    "pair": {"Windows": "Win2", "Win2": "Windows"},
    "deep": {"Windows": "Windows\\System32"},
}


def symlink_reparse_data(target: str) -> bytes:
    """A relative symbolic link's reparse buffer: the same name as substitute and print."""
    name = target.encode("utf-16-le")
    n = len(name)
    body = struct.pack("<HHHHI", 0, n, n, n, SYMLINK_FLAG_RELATIVE) + name + name
    return struct.pack("<IHH", IO_REPARSE_TAG_SYMLINK, len(body), 0) + body


def build(out: Path, work: Path, kind: str, links: dict[str, str]) -> Path:
    volume = work / f"{kind}.ntfs"
    with open(volume, "wb") as fh:
        fh.truncate(3 * MiB)
    run(
        "mkntfs", "-q", "-F", "-Q", "-s", "512", "-p", "2048", "-L", "Windows", volume,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    mnt = Path(tempfile.mkdtemp(prefix="offline-ic-ntfs-"))
    try:
        run("ntfs-3g", volume, mnt)
        try:
            for name in links:
                (mnt / name).mkdir()
            for name, target in links.items():
                os.setxattr(mnt / name, "system.ntfs_reparse_data", symlink_reparse_data(target))
        finally:
            run("umount", mnt)
    finally:
        mnt.rmdir()
    disk = work / f"link-loop-{kind}.raw"
    make_disk(disk, 4 * MiB, "dos", [(2048, 6144, "7", volume)])
    run("xz", "-9e", "-f", disk)
    dest = out / f"link-loop-{kind}.raw.xz"
    dest.write_bytes(disk.with_suffix(".raw.xz").read_bytes())
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=REPO / "testdata" / "ntfs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="offline-ic-loops-") as tmp:
        for kind, links in LOOPS.items():
            made = build(args.out, Path(tmp), kind, links)
            print(f"{made.stat().st_size:>10}  {made}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

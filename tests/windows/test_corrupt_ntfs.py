"""Corrupt NTFS under a hive: byte flips in the SYSTEM hive's MFT record and its run list.

Seeded (the same 200 cases every run): each case changes one to three bytes of the real
image's MFT record of Windows/System32/config/SYSTEM (half of them inside its $DATA run
list), runs ``services list`` and ``services set --dry-run`` in-process and requires a
clean outcome: exit 0, or one ``offline-ic: error:`` line with exit 2/3, never an exception
out of the CLI (which the in-process runner would raise here).
"""

from __future__ import annotations

import random
import shutil
import signal
import struct

import pytest

from tests.helpers import TESTDATA

NTFS_OFFSET = 43008 * 512  # win10-gpt (clean hive): the NTFS volume's first sector
CASES = 200


@pytest.fixture(scope="module")
def image(tmp_path_factory, unpacked):
    import subprocess

    if shutil.which("qemu-img") is None:
        pytest.skip("needs qemu-img")
    src = unpacked(TESTDATA / "windows" / "win10-gpt-dynamic.vhdx.xz")
    dest = tmp_path_factory.mktemp("ntfs-flips") / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(src), str(dest)], check=True)
    return dest


def _system_record(path) -> tuple[int, int, int]:
    """(disk offset of the SYSTEM hive's MFT record, record size, run list offset in it)."""
    from offline_ic.image import open_image
    from offline_ic.volumes import list_volumes

    with open_image(str(path)) as img:
        (vol,) = [v for v in list_volumes(img) if v.filesystem == "ntfs"]
        from dissect.ntfs import NTFS
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        fs = NTFS(vol.stream())
        rec = fs.mft.get("Windows/System32/config/SYSTEM")
        (lcn, _count), *_ = fs.mft.get(0).attributes[ATTRIBUTE_TYPE_CODE.DATA][0].dataruns()
        with open(path, "rb") as fh:
            fh.seek(NTFS_OFFSET + 0x40)
            (clusters_per_record,) = struct.unpack("<b", fh.read(1))
        size = 1 << -clusters_per_record if clusters_per_record < 0 else clusters_per_record
        offset = NTFS_OFFSET + lcn * fs.cluster_size + rec.segment * size
    with open(path, "rb") as fh:
        fh.seek(offset)
        raw = fh.read(size)
    assert raw[:4] == b"FILE"
    pos = struct.unpack_from("<H", raw, 0x14)[0]  # first attribute
    while pos + 8 < size:
        kind, length = struct.unpack_from("<II", raw, pos)
        if kind == 0x80:
            return offset, size, pos + struct.unpack_from("<H", raw, pos + 0x20)[0]
        if kind == 0xFFFFFFFF or length == 0:
            break
        pos += length
    raise AssertionError("no $DATA attribute in the SYSTEM record")


class Hang(Exception):
    pass


def _alarm(_sig, _frame):
    raise Hang()


def test_flipped_mft_record_bytes_give_one_line_errors(image, cli):
    signal.signal(signal.SIGALRM, _alarm)
    offset, size, runlist = _system_record(image)
    rng = random.Random(14)
    original = image.read_bytes()[offset : offset + size]
    outcomes: dict[int, int] = {}
    with open(image, "r+b") as fh:
        for case in range(CASES):
            buf = bytearray(original)
            lo, hi = (runlist - 0x20, runlist + 16) if case % 2 else (0, size)
            for _ in range(rng.randint(1, 3)):
                buf[rng.randrange(lo, hi)] = rng.randrange(256)
            fh.seek(offset)
            fh.write(buf)
            fh.flush()
            signal.alarm(20)  # a hang fails with the case number instead of stalling the suite
            try:
                runs = (
                    (("services", "list"), ("services", "set"))
                    if case % 4 == 0
                    else (("services", "list"),)
                )
                for args in runs:
                    extra = ("vss=disabled", "--dry-run") if args[1] == "set" else ()
                    code, _out, err = cli(*args, image, *extra)
                    outcomes[code] = outcomes.get(code, 0) + 1
                    assert code in (0, 2, 3), (case, err)
                    if code:
                        assert err.startswith("offline-ic: error: ") and err.count("\n") == 1
            except Hang:
                pytest.fail(f"case {case}: no result within 20 s")
            finally:
                signal.alarm(0)
                fh.seek(offset)
                fh.write(original)
                fh.flush()
    assert outcomes.get(2, 0) > 0, outcomes  # the flips do reach the parsers

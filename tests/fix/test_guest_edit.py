"""The libguestfs engine's parts that need no appliance: the copy-on-write NBD export of our
reader (driven by qemu's own NBD client), guestfish quoting (checked with guestfish's local
``echo``, which launches nothing), and the install hint without libguestfs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from offline_ic.errors import InputError
from offline_ic.image import open_image
from offline_ic.image.nbd_export import BLOCK, CowOverlay, NbdServer
from offline_ic.image.vhdx.create import create_child, create_vhdx
from offline_ic.workflows import guest_edit
from offline_ic.workflows.appliance import quote

QEMU_IO = shutil.which("qemu-io")
QEMU_IMG = shutil.which("qemu-img")
MiB = 1 << 20


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _libvhdi_disk(path: Path) -> bytes:
    """The whole virtual disk as libvhdi reads it (with the parent chain)."""
    from offline_ic.image.verify import independent_reads

    with open_image(str(path)) as img:
        reader, (data,) = independent_reads(img, [(0, img.size)])
    assert reader == "libvhdi"
    return data


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """A differencing VHDX (qemu cannot write one) over a dynamic parent, both holding data."""
    parent = tmp_path / "base.vhdx"
    create_vhdx(str(parent), 8 * MiB, block_size=MiB)
    with open_image(str(parent), writable=True) as img:
        img.write_ranges([(0, b"\x11" * (3 * MiB)), (6 * MiB, b"\x22" * 4096)])
    child = tmp_path / "child.avhdx"
    create_child(str(parent), str(child))
    with open_image(str(child), writable=True) as img:
        img.write_ranges([(MiB + 100, b"\x33" * 5000)])
    return child


@pytest.mark.skipif(QEMU_IO is None or QEMU_IMG is None, reason="needs qemu-utils")
def test_nbd_export_serves_our_reader_and_keeps_writes_in_the_overlay(chain, tmp_path):
    before = {p.name: _sha(p) for p in tmp_path.iterdir()}
    with open_image(str(chain)) as img:
        overlay = CowOverlay(img, str(tmp_path))
        server = NbdServer(overlay, str(tmp_path / "s.sock"))
        try:
            # qemu reads the whole disk through the export: libvhdi's view of the chain
            copy = tmp_path / "copy.raw"
            subprocess.run([QEMU_IMG, "convert", "-O", "raw", server.uri, str(copy)], check=True)
            assert copy.read_bytes() == _libvhdi_disk(chain)
            # writes: unaligned, across blocks, one rewriting bytes already there
            subprocess.run(
                [
                    QEMU_IO,
                    "-f",
                    "raw",
                    "-c",
                    "write -P 0xab 1000 5000",
                    "-c",
                    "write -P 0x22 6291456 4096",  # the same bytes: not a change
                    "-c",
                    "write -P 0xcd 7340032 65536",
                    server.uri,
                ],
                check=True,
                capture_output=True,
            )
            changed = list(overlay.changed_ranges(max_run=16384))
            old = _libvhdi_disk(chain)
            # reads after the writes come from the overlay where written
            assert overlay.read(1000, 5000) == b"\xab" * 5000
            assert overlay.read(996, 4) == old[996:1000]
            assert overlay.read(6000, 100) == old[6000:6100]  # rest of a written block
        finally:
            server.close()
            overlay.close()
        assert server.errors == []
    # exactly the blocks whose bytes differ, in max_run pieces, with the new bytes
    assert [(o, len(d)) for o, d in changed] == [(0, 2 * BLOCK)] + [
        (7 * MiB + i * 16384, 16384) for i in range(4)
    ]
    first = changed[0][1]
    assert first[1000:6000] == b"\xab" * 5000 and first[:1000] == old[:1000]
    assert first[6000:] == old[6000 : 2 * BLOCK]
    # the image files were never written
    assert {p.name: _sha(p) for p in (chain, chain.parent / "base.vhdx")} == {
        k: v for k, v in before.items() if k in ("child.avhdx", "base.vhdx")
    }


def test_overlay_refuses_writes_outside_the_disk(chain, tmp_path):
    with open_image(str(chain)) as img:
        overlay = CowOverlay(img, str(tmp_path))
        with pytest.raises(ValueError):
            overlay.write(img.size - 10, b"x" * 11)
        assert overlay.dirty == set()
        overlay.close()


HOSTILE = [
    "/etc/modprobe.d/a|touch PWNED",
    '/etc/x"; !touch PWNED #',
    "/tmp/back\\slash $(touch PWNED) `touch PWNED`",
    "/new\nline\ttab",
    "/caf\u00e9",
    os.fsdecode(b"/bad-\xff\xfe-utf8"),
]


@pytest.mark.skipif(shutil.which("guestfish") is None, reason="needs libguestfs-tools")
@pytest.mark.parametrize("text", HOSTILE)
def test_quote_round_trips_through_guestfish_and_runs_nothing(text, tmp_path):
    """guestfish's own parser reads back the exact bytes; no host shell ever runs."""
    done = subprocess.run(
        ["guestfish"],
        input=f"echo {quote(text)}\n".encode(),
        capture_output=True,
        cwd=tmp_path,
        check=True,
    )
    assert done.stdout == os.fsencode(text) + b"\n"
    assert not (tmp_path / "PWNED").exists()


def test_quote_refuses_nul():
    with pytest.raises(InputError):
        quote("/a\0b")


def test_without_libguestfs_the_hint_and_exit_2(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert guest_edit.guestfs_missing() == guest_edit.INSTALL_HINT
    assert "apt-get install -y libguestfs-tools" in guest_edit.INSTALL_HINT
    with pytest.raises(InputError) as err:
        guest_edit.apply_guest_edits(str(tmp_path / "none.vhdx"), [])
    assert str(err.value) == guest_edit.INSTALL_HINT
    assert err.value.exit_code == 2


@pytest.mark.skipif(QEMU_IO is None, reason="needs qemu-utils")
def test_trimmed_blocks_are_not_committed(chain, tmp_path):
    """A file the guest wrote and deleted (its blocks discarded by fstrim) is not a change:
    whole written blocks in a trimmed range go back to the image's bytes; a block only
    partly trimmed stays written."""
    with open_image(str(chain)) as img:
        overlay = CowOverlay(img, str(tmp_path))
        server = NbdServer(overlay, str(tmp_path / "s.sock"))
        try:
            subprocess.run(
                [
                    QEMU_IO,
                    "-f",
                    "raw",
                    "-c",
                    "write -P 0xcd 7340032 65536",
                    "-c",
                    "discard 7340032 32768",  # the first 8 blocks
                    "-c",
                    "discard 7374848 2048",  # half of block 9: kept
                    server.uri,
                ],
                check=True,
                capture_output=True,
            )
            changed = [(o, len(d)) for o, d in overlay.changed_ranges()]
            assert overlay.read(7340032, 4) == img.read(7340032, 4)
        finally:
            server.close()
            overlay.close()
    assert changed == [(7340032 + 32768, 32768)]

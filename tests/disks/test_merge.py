"""``merge``: a differencing chain made of real ntfs-3g writes goes into its parent (or down
to an ancestor) and reads, through libvhdi and qemu-img, exactly what the chain read."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

from offline_ic.image.verify import verify_image
from tests.disks.chains import MiB, digest_tree, files_of, libvhdi_read, need, ntfs_chain


@pytest.fixture
def chain(tmp_path):
    return ntfs_chain(tmp_path / "chain", [files_of(1), files_of(2)])


def _qemu_same(vhdx: Path, raw: Path) -> None:
    need("qemu-img")
    subprocess.run(["qemu-img", "check", "-q", str(vhdx)], check=True)
    got = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "vhdx", "-F", "raw", str(vhdx), str(raw)]
    )
    assert got.returncode == 0, "qemu-img compare: the merged disk differs from the chain"


def test_the_chain_reads_what_ntfs3g_wrote(chain):
    """The test data itself: libvhdi reads each level as ntfs-3g left the volume."""
    for i in range(1, len(chain.disks)):
        assert libvhdi_read(chain.disks[: i + 1]) == chain.expected[i].read_bytes()
    assert chain.expected[2].read_bytes() != chain.expected[1].read_bytes()


def test_merge_into_the_parent(chain, cli):
    base, c1, c2 = chain.disks
    code, out, err = cli("merge", c2, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["changed"] and doc["verified"] == "libvhdi"
    assert doc["deleted"] == [str(c2)] and not c2.exists()
    assert Path(doc["into"]).samefile(c1)
    # c1 (a differencing disk itself) now reads what c2 read, through libvhdi
    assert libvhdi_read([base, c1]) == chain.expected[2].read_bytes()
    assert verify_image(str(c1)).ok
    # and base was not touched: it still reads level 0
    assert libvhdi_read([base]) == chain.expected[0].read_bytes()


def test_merge_down_to_the_base(chain, cli):
    base, c1, c2 = chain.disks
    code, out, err = cli("merge", c2, "--into", base)
    assert code == 0, err
    assert "into" in out and "read back by libvhdi" in out
    assert f"deleted: {c2.name}, {c1.name}" in out
    assert not c1.exists() and not c2.exists()
    assert libvhdi_read([base]) == chain.expected[2].read_bytes()
    _qemu_same(base, chain.expected[2])
    rep = verify_image(str(base))
    assert rep.ok, rep.problems


def test_keep_child_keeps_the_files(chain, cli):
    base, c1, c2 = chain.disks
    code, out, err = cli("merge", c2, "--into", base, "--keep-child", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["deleted"] == [] and len(doc["kept"]) == 2
    assert c1.exists() and c2.exists()
    _qemu_same(base, chain.expected[2])


def test_dry_run_writes_nothing(chain, cli):
    before = digest_tree(chain.top.parent)
    code, out, err = cli("merge", chain.top, "--into", chain.disks[0], "--dry-run", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["dry_run"] and not doc["changed"] and doc["bytes"] > 6 * MiB
    assert doc["deleted"] == [] and doc["kept"] == []
    assert doc["would_delete"] == doc["merged"] == [str(chain.top), str(chain.disks[1])]
    assert digest_tree(chain.top.parent) == before
    code, out, err = cli("merge", chain.top, "--dry-run", "--keep-child", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["would_delete"] == [] and doc["kept"] == [str(chain.top)], err
    assert digest_tree(chain.top.parent) == before


def test_parent_with_another_child_is_refused(chain, cli):
    from offline_ic.image.vhdx.create import create_child

    base, c1, c2 = chain.disks
    sibling = c1.parent / "sibling.avhdx"
    create_child(str(c1), str(sibling))
    before = digest_tree(c1.parent)
    code, out, err = cli("merge", c2)
    assert code == 3 and out == ""
    assert "c1.avhdx: is also the parent of" in err and "sibling.avhdx" in err
    assert digest_tree(c1.parent) == before
    # --into base: c1 would be deleted under its other child: refused too
    code, _out, err = cli("merge", c2, "--into", base)
    assert code == 3 and "sibling.avhdx" in err
    assert digest_tree(c1.parent) == before


@pytest.mark.parametrize("keep", [[], ["--keep-child"]])
def test_a_child_that_is_itself_a_parent_is_refused(chain, cli, keep):
    """Before: ``merge c1`` merged c1 into the base and deleted it while c2 still used it as
    its parent: c2 no longer opened (with --keep-child it read c1 over a changed base)."""
    base, c1, c2 = chain.disks
    before = digest_tree(c1.parent)
    code, out, err = cli("merge", c1, *keep)
    assert code == 3 and out == "", err
    assert "c1.avhdx: is the parent of" in err and "c2.avhdx" in err and "nothing written" in err
    assert digest_tree(c1.parent) == before
    assert libvhdi_read([base, c1, c2]) == chain.expected[2].read_bytes()


def test_read_only_target_is_refused(chain, cli):
    c1 = chain.disks[1]
    os.chmod(c1, 0o444)
    before = digest_tree(c1.parent)
    code, _out, err = cli("merge", chain.top)
    assert code == 3 and "read-only" in err, err
    assert digest_tree(c1.parent) == before


def test_read_only_child_is_refused(chain, cli):
    os.chmod(chain.top, 0o444)
    before = digest_tree(chain.top.parent)
    code, _out, err = cli("merge", chain.top)
    assert code == 3 and "c2.avhdx: the image file is read-only" in err, err
    assert digest_tree(chain.top.parent) == before


@pytest.mark.parametrize("which", ["target", "child"])
def test_locked_file_is_refused(chain, cli, which):
    path = chain.disks[1] if which == "target" else chain.top
    before = digest_tree(path.parent)
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_SH)  # what another offline-ic writer of the chain holds
        code, _out, err = cli("merge", chain.top)
    assert code == 3 and "another process" in err, err
    assert digest_tree(path.parent) == before


def test_linkage_mismatch_is_refused(chain, cli):
    """The parent was written after the child was made (its DataWriteGuid changed): merging
    would put the child's sectors over data the child never saw."""
    from offline_ic.image import open_image

    c1 = chain.disks[1]
    with open_image(str(c1), writable=True, force=True) as img:
        img.write_ranges([(0, b"\x00" * 512)])
    before = digest_tree(c1.parent)
    code, _out, err = cli("merge", chain.top)
    assert code == 3, err
    assert "DataWriteGuid" in err and "does not match" in err and "nothing written" in err
    assert digest_tree(c1.parent) == before


def test_into_must_be_an_ancestor(chain, cli, tmp_path):
    other = tmp_path / "other.vhdx"
    other.write_bytes(chain.disks[0].read_bytes())
    code, _out, err = cli("merge", chain.top, "--into", other)
    assert code == 2 and "is not one of its ancestors" in err


def test_a_base_disk_has_nothing_to_merge(chain, cli):
    code, _out, err = cli("merge", chain.disks[0])
    assert code == 2 and "not a differencing disk" in err


# ------------------------------------------------------------------------------------- VHD
def test_merge_a_differencing_vhd_into_its_dynamic_parent(tmp_path, cli):
    from offline_ic.image.journal import pending
    from tests.disks.chains import vhd_chain

    chain = vhd_chain(tmp_path / "vhd", files_of(7))
    base, child = chain.disks
    assert libvhdi_read(chain.disks) == chain.expected[1].read_bytes()
    code, out, err = cli("merge", child, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == "vhd" and doc["verified"] == "libvhdi" and not child.exists()
    assert libvhdi_read([base]) == chain.expected[1].read_bytes()
    got = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", str(base), str(chain.expected[1])]
    )
    assert got.returncode == 0
    assert verify_image(str(base)).ok and not pending(str(base))


def test_a_read_back_that_disagrees_keeps_the_child(chain, cli, monkeypatch):
    """The writer puts other bytes than the chain's (a bug, a lying disk): libvhdi's
    read-back sees it, the merge is refused and nothing is deleted."""
    from offline_ic.image.vhdx import writer

    real = writer.Pending.load

    def wrong(self):
        data = real(self)
        return bytes([data[0] ^ 0xFF]) + data[1:]

    monkeypatch.setattr(writer.Pending, "load", wrong)
    base, c1, c2 = chain.disks
    code, _out, err = cli("merge", c2, "--into", base)
    assert code == 3 and "libvhdi reads different bytes at" in err, err
    assert "the merged files were kept" in err
    assert c1.exists() and c2.exists()

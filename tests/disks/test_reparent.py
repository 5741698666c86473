"""``reparent``: a chain whose parent was moved into another folder fails to open; reparent
points the child at the new path, libvhdi opens the child over it and reads the same bytes."""

from __future__ import annotations

import json
import shutil

import pytest

from offline_ic.errors import NotFoundError
from offline_ic.image import open_image
from offline_ic.image.vhdx import VhdxReader
from tests.disks.chains import digest_tree, files_of, libvhdi_chain, ntfs_chain


@pytest.fixture
def moved(tmp_path):
    """(chain, child, new parent path): the base renamed into a subfolder after the
    children were made."""
    chain = ntfs_chain(tmp_path / "vm", [files_of(3), files_of(4)])
    new = chain.disks[0].parent / "parents" / "base-renamed.vhdx"
    new.parent.mkdir()
    shutil.move(chain.disks[0], new)
    return chain, chain.disks[1], new


def test_a_moved_chain_is_fixed(moved, cli):
    chain, child, new = moved
    with pytest.raises(NotFoundError):
        open_image(str(child)).close()
    code, out, err = cli("reparent", child, "--parent", new, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (
        doc["linkage_matched"]
        and doc["locator"]["relative_path"] == ".\\parents\\base-renamed.vhdx"
    )
    assert "absolute_win32_path" not in doc["locator"]  # no Windows path given: none written
    # our reader finds the parent through the new relative path (no --parent)
    with open_image(str(child)) as img:
        assert img.read(0, img.size) == chain.expected[1].read_bytes()
    # libvhdi: the child names the new parent, links to it, and reads the same bytes
    import pyvhdi

    f = pyvhdi.file()
    f.open(str(child))
    with open_image(str(new)) as par:
        assert f.get_parent_identifier() == str(par.header.data_write_guid)
    f.close()
    with libvhdi_chain([new, child]) as top:
        assert top.read_buffer_at_offset(top.media_size, 0) == chain.expected[1].read_bytes()
    # the grandchild still links to the child (its DataWriteGuid did not change)
    with open_image(str(chain.disks[2])) as img:
        assert img.read(0, img.size) == chain.expected[2].read_bytes()


def test_windows_path_gives_a_drive_letter_absolute_path(moved, cli):
    _chain, child, new = moved
    code, out, err = cli(
        "reparent", child, "--parent", new, "--windows-path", r"d:\VMs\parents\base-renamed.vhdx"
    )
    assert code == 0, err
    with VhdxReader(str(child), open_parent=False) as img:
        absolute = img.parent_locator["absolute_win32_path"]
    # MS-VHDX 2.6.2.6.3: an extended-length path on a drive letter
    assert absolute == "\\\\?\\D:\\VMs\\parents\\base-renamed.vhdx"
    assert "absolute_win32_path: \\\\?\\D:\\VMs" in out
    import pyvhdi  # libvhdi names the parent by that path

    f = pyvhdi.file()
    f.open(str(child))
    assert f.get_parent_filename() == absolute
    f.close()


@pytest.mark.parametrize("bad", ["VMs\\base.vhdx", "\\\\server\\share\\b.vhdx", "D:\\a\\..\\b"])
def test_a_windows_path_without_drive_letter_is_refused(moved, cli, bad):
    _chain, child, new = moved
    before = digest_tree(child.parent)
    code, _out, err = cli("reparent", child, "--parent", new, "--windows-path", bad)
    assert code == 2 and "Windows" in err
    assert digest_tree(child.parent) == before


def test_a_parent_that_is_not_the_one_is_refused(moved, cli, tmp_path):
    from offline_ic.image.vhdx.create import create_vhdx

    _chain, child, new = moved
    stranger = child.parent / "stranger.vhdx"
    with open_image(str(new)) as img:
        create_vhdx(str(stranger), img.size, block_size=img.block_size)
    before = digest_tree(child.parent)
    code, out, err = cli("reparent", child, "--parent", stranger)
    assert code == 3 and out == "" and "DataWriteGuid" in err and "nothing written" in err
    assert digest_tree(child.parent) == before
    code, out, err = cli("reparent", child, "--parent", stranger, "--ignore-id", "--json")
    assert code == 0, err
    assert not json.loads(out)["linkage_matched"]
    with open_image(str(child)) as img:  # now linked to the stranger (the user said so)
        assert img.parent is not None and img.parent.path.endswith("stranger.vhdx")


def test_dry_run_writes_nothing(moved, cli):
    _chain, child, new = moved
    before = digest_tree(child.parent)
    code, out, err = cli("reparent", child, "--parent", new, "--dry-run")
    assert code == 0 and out.startswith("would point"), err
    assert digest_tree(child.parent) == before


def test_snapshot_writes_no_absolute_path_without_a_windows_path(tmp_path, cli):
    """Before: ``absolute_win32_path`` was the Linux path with backslashes (``\\tmp\\...``),
    which no Windows host resolves."""
    from offline_ic.image.vhdx.create import create_vhdx

    base = tmp_path / "base.vhdx"
    create_vhdx(str(base), 8 << 20)
    code, _out, err = cli("snapshot", base, tmp_path / "a.avhdx")
    assert code == 0, err
    code, _out, err = cli(
        "snapshot", base, tmp_path / "b.avhdx", "--windows-path", "E:\\Hyper-V\\base.vhdx"
    )
    assert code == 0, err
    with VhdxReader(str(tmp_path / "a.avhdx"), open_parent=False) as a:
        assert set(a.parent_locator) == {"parent_linkage", "relative_path"}
    with VhdxReader(str(tmp_path / "b.avhdx"), open_parent=False) as b:
        assert b.parent_locator["absolute_win32_path"] == "\\\\?\\E:\\Hyper-V\\base.vhdx"


# ------------------------------------------------------------------------------------- VHD
def test_a_moved_vhd_chain_is_fixed(tmp_path, cli):
    """The VHD (v1) form: W2ru (relative) and W2ku (absolute) locator entries."""
    from offline_ic.image.vhd import VhdReader
    from tests.disks.chains import vhd_chain

    chain = vhd_chain(tmp_path / "vm", files_of(5))
    base, child = chain.disks
    new = child.parent / "parents" / "moved.vhd"
    new.parent.mkdir()
    shutil.move(base, new)
    with pytest.raises(NotFoundError):
        open_image(str(child)).close()
    stranger = child.parent / "stranger.vhd"
    import subprocess

    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on"]
        + [str(stranger), "48M"],
        check=True,
    )
    before = digest_tree(child.parent)
    code, _out, err = cli("reparent", child, "--parent", stranger)
    assert code == 3 and "unique id" in err and "nothing written" in err
    assert digest_tree(child.parent) == before
    code, out, err = cli(
        "reparent", child, "--parent", new, "--windows-path", "D:\\VMs\\parents\\moved.vhd"
    )
    assert code == 0, err
    with VhdReader(str(child), open_parent=False) as img:
        assert img.parent_name == "D:\\VMs\\parents\\moved.vhd"
    with open_image(str(child)) as img:  # found through W2ru, no --parent
        assert img.read(0, img.size) == chain.expected[1].read_bytes()
    with libvhdi_chain([new, child]) as top:
        assert top.read_buffer_at_offset(top.media_size, 0) == chain.expected[1].read_bytes()
    from offline_ic.image.verify import verify_image

    assert verify_image(str(child)).ok


@pytest.mark.parametrize("target", ["itself", "its child"])
def test_a_parent_that_would_make_a_loop_is_refused_even_with_ignore_id(tmp_path, cli, target):
    """Before: ``--ignore-id`` wrote CHILD's locator pointing at CHILD itself (or at its own
    child), then failed reading it back (exit 2): a chain that loops, which no reader opens."""
    from offline_ic.image.vhdx.create import create_vhdx

    base, mid, top = tmp_path / "base.vhdx", tmp_path / "mid.avhdx", tmp_path / "top.avhdx"
    create_vhdx(str(base), 8 << 20)
    for parent, child in ((base, mid), (mid, top)):
        code, _out, err = cli("snapshot", parent, child)
        assert code == 0, err
    before = digest_tree(tmp_path)
    new = mid if target == "itself" else top
    code, out, err = cli("reparent", mid, "--parent", new, "--ignore-id")
    assert code == 3 and out == "" and "loop" in err and "nothing written" in err, err
    assert digest_tree(tmp_path) == before
    with open_image(str(top)) as img:  # the chain still opens
        assert img.parent is not None and img.parent.parent is not None


def test_a_vhd_child_pointed_at_itself_is_refused_even_with_ignore_id(tmp_path, cli):
    """The VHD form of the loop refusal: nothing written, the chain still opens."""
    from tests.disks.chains import vhd_chain

    chain = vhd_chain(tmp_path / "vm", files_of(6), size=16 << 20)
    child = chain.disks[1]
    before = digest_tree(child.parent)
    code, out, err = cli("reparent", child, "--parent", child, "--ignore-id")
    assert code == 3 and out == "" and "loop" in err and "nothing written" in err, err
    assert digest_tree(child.parent) == before
    with open_image(str(child)) as img:
        assert img.read(0, img.size) == chain.expected[1].read_bytes()


# ------------------------------------------------------------------- read back by libvhdi
@pytest.mark.parametrize("fmt", ["vhdx", "vhd"])
def test_the_written_link_is_read_back_by_libvhdi(tmp_path, cli, fmt):
    from tests.disks.test_reparent_faults import WIN, link, moved_chain, reads

    pytest.importorskip("pyvhdi")
    child, new, content = moved_chain(tmp_path / "vm", fmt)
    code, out, err = cli("reparent", child, "--parent", new, "--windows-path", WIN[fmt], "--json")
    assert code == 0, err
    assert json.loads(out)["verified"] == "libvhdi"
    assert link(child)[0][1] == (WIN[fmt] if fmt == "vhd" else "\\\\?\\" + WIN[fmt])
    assert reads(child, None, content)


@pytest.mark.parametrize("fmt", ["vhdx", "vhd"])
def test_a_wrongly_written_locator_is_reported(tmp_path, cli, monkeypatch, fmt):
    """The writer is made to write another Windows path than the one meant: libvhdi reads
    it back, and the command says so (exit 3) instead of reporting success."""
    from tests.disks.test_reparent_faults import WIN, link, moved_chain

    pytest.importorskip("pyvhdi")
    child, new, _content = moved_chain(tmp_path / "vm", fmt)
    if fmt == "vhdx":
        import offline_ic.image.vhdx.structures as S

        real = S.pack_parent_locator

        def wrong(locator):
            return real({**locator, "absolute_win32_path": "\\\\?\\E:\\elsewhere.vhdx"})

        monkeypatch.setattr(S, "pack_parent_locator", wrong)
    else:
        import offline_ic.image.vhd.writer as W

        real = W.write_parent_locators
        monkeypatch.setattr(
            W,
            "write_parent_locators",
            lambda img, locs, _name, *a: real(img, locs, "E:\\other.vhd", *a),
        )
    code, out, err = cli("reparent", child, "--parent", new, "--windows-path", WIN[fmt])
    assert code == 3 and out == "", err
    wrong = "'\\\\?\\E:\\elsewhere.vhdx'" if fmt == "vhdx" else "'E:\\other.vhd'"
    assert "written, but libvhdi reads parent identifier" in err and wrong in err, err
    assert link(child)[0][1] in ("\\\\?\\E:\\elsewhere.vhdx", "E:\\other.vhd")  # what is there


def test_without_pyvhdi_nothing_is_claimed_verified(tmp_path, cli, monkeypatch):
    from tests.disks.test_reparent_faults import WIN, moved_chain

    child, new, _content = moved_chain(tmp_path / "vm", "vhdx")
    monkeypatch.setitem(__import__("sys").modules, "pyvhdi", None)  # import fails
    code, out, err = cli(
        "reparent", child, "--parent", new, "--windows-path", WIN["vhdx"], "--json"
    )
    assert code == 0, err
    assert json.loads(out)["verified"] is None


def test_libvhdi_reading_other_bytes_over_the_new_parent_is_reported(tmp_path, cli, monkeypatch):
    """libvhdi's reading of the child over NEWPARENT is compared with ours: a reader that
    disagrees at one byte (simulated here on libvhdi's side) makes the command fail."""
    import offline_ic.image.verify as V
    from tests.disks.test_reparent_faults import moved_chain

    pytest.importorskip("pyvhdi")
    child, new, _content = moved_chain(tmp_path / "vm", "vhdx")
    real = V.open_independent

    def off_by_one_byte(img):
        reader = real(img)

        def read_at(n, off):
            data = bytearray(reader.read(off, n))
            if off <= 9 * (1 << 20) < off + n:
                data[9 * (1 << 20) - off] ^= 1
            return bytes(data)

        return V.IndependentReader("libvhdi", read_at, reader.close)

    monkeypatch.setattr(V, "open_independent", off_by_one_byte)
    code, out, err = cli("reparent", child, "--parent", new)
    assert code == 3 and out == "", err
    assert "over" in err and "libvhdi reads different bytes at 9437184" in err, err


# --------------------------------------------------------------- onto the current parent
@pytest.mark.parametrize("fmt", ["vhdx", "vhd"])
def test_reparent_onto_the_current_parent_writes_nothing(tmp_path, cli, fmt):
    """Before: the locator was rewritten (a new log entry, the file's headers renewed) when
    nothing changed. Now: a second identical reparent leaves the file byte-identical."""
    from tests.disks.test_reparent_faults import WIN, moved_chain

    child, new, _content = moved_chain(tmp_path / "vm", fmt)
    args = ("reparent", child, "--parent", new, "--windows-path", WIN[fmt])
    code, out, err = cli(*args)
    assert code == 0 and out.startswith("pointed"), err
    before = child.read_bytes()
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["changed"] is False and doc["written_to"] is None and not doc["verified"]
    assert "would be byte-identical: nothing written" in doc["notes"][0]
    assert child.read_bytes() == before
    code, out, err = cli(*args)
    assert code == 0 and "already opens over" in out and child.read_bytes() == before, err
    # another Windows path is a change: written
    code, out, err = cli("reparent", child, "--parent", new, "--windows-path", "E:\\b\\c.vhd")
    assert code == 0 and out.startswith("pointed") and child.read_bytes() != before, err


def test_a_fresh_snapshot_reparented_onto_its_parent_is_not_rewritten(tmp_path, cli):
    from offline_ic.image.vhdx.create import create_vhdx

    base = tmp_path / "base.vhdx"
    create_vhdx(str(base), 8 << 20)
    code, _out, err = cli("snapshot", base, tmp_path / "a.avhdx")
    assert code == 0, err
    before = (tmp_path / "a.avhdx").read_bytes()
    code, out, err = cli("reparent", tmp_path / "a.avhdx", "--parent", base)
    assert code == 0 and "nothing written" in out, err
    assert (tmp_path / "a.avhdx").read_bytes() == before

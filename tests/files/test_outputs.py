"""No output replaces an input, and no existing file is replaced without --force (issue 19,
"Outputs destroy inputs"; docs/architecture.md "Outputs").

Each reproducer of the issue names an input as the output, by its own name, through a hard
link and through a symlink: the command must exit 3 and the input's sha256 must not change.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from offline_ic import outputs
from offline_ic.errors import InputError, SafetyRefusal
from tests.helpers import TESTDATA, unpack


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def vhd(tmp_path):
    return unpack(TESTDATA / "images/q-dyn.vhd.gz", tmp_path)


@pytest.fixture
def vhdx(tmp_path):
    return unpack(TESTDATA / "images/q-dyn-2m.vhdx.gz", tmp_path)


@pytest.fixture
def hive(tmp_path):
    return unpack(TESTDATA / "hives/SYSTEM_win10_1709_clean.xz", tmp_path)


def _names(path, how):
    """``path`` itself, a hard link to it, or a symlink to it (in another directory)."""
    if how == "same":
        return path
    other = path.parent / "elsewhere"
    other.mkdir(exist_ok=True)
    alias = other / f"{how}-{path.name}"
    if how == "hardlink":
        os.link(path, alias)
    else:
        alias.symlink_to(path)
    return alias


HOWS = ["same", "hardlink", "symlink"]


def _refused(cli, args, protected, force=True):
    """Run ``args`` (with --force when ``force``: even then an input is never replaced)."""
    before = {p: sha(p) for p in protected}
    stat_before = {p: os.stat(p).st_ino for p in protected}
    code, _out, err = cli(*args, *(["--force"] if force else []))
    assert code == 3, err
    assert "an output never replaces an input" in err
    assert {p: sha(p) for p in protected} == before
    assert {p: os.stat(p).st_ino for p in protected} == stat_before
    assert not [n for n in os.listdir(protected[0].parent) if outputs.TMP_TAG in n]


@pytest.mark.parametrize("how", HOWS)
def test_inspect_html_over_image(cli, vhd, how):
    _refused(cli, ["inspect", vhd, "--html", _names(vhd, how)], [vhd])


@pytest.mark.parametrize("how", HOWS)
def test_check_junit_over_image(cli, vhd, how):
    _refused(cli, ["check", vhd, "--junit", _names(vhd, how)], [vhd])


@pytest.mark.parametrize("how", HOWS)
def test_check_junit_over_target_list(cli, vhd, tmp_path, how):
    targets = tmp_path / "list.txt"
    targets.write_text(f"{vhd}\n")
    _refused(cli, ["check", "--from", targets, "--junit", _names(targets, how)], [targets, vhd])


@pytest.mark.parametrize("how", HOWS)
def test_check_junit_over_policy(cli, vhd, tmp_path, how):
    policy = tmp_path / "gate.toml"
    policy.write_text("[checks]\nwarn = []\n")
    _refused(cli, ["check", vhd, "--policy", policy, "--junit", _names(policy, how)], [policy])


@pytest.mark.parametrize("how", HOWS)
def test_reg_export_over_hive(cli, hive, how):
    _refused(cli, ["reg", "export", hive, "HKLM\\SYSTEM\\Select", "-o", _names(hive, how)], [hive])


@pytest.mark.parametrize("how", HOWS)
def test_hive_recover_to_over_hive(cli, hive, how):
    _refused(cli, ["hive", "recover", hive, "--output", _names(hive, how)], [hive])


def test_hive_recover_to_over_its_log(cli, hive):
    log = hive.parent / f"{hive.name}.LOG1"
    log.write_bytes(b"\0" * 512)
    _refused(cli, ["hive", "recover", hive, "--output", log], [hive, log])


@pytest.mark.parametrize("how", HOWS)
def test_convert_over_source(cli, vhd, how):
    _refused(cli, ["convert", vhd, _names(vhd, how)], [vhd])


def test_convert_over_parent_of_chain(cli, vhdx, tmp_path):
    """The destination is the parent of the source child: found because the chain was read."""
    child = tmp_path / "child.avhdx"
    assert cli("snapshot", vhdx, child)[0] == 0
    alias = _names(vhdx, "hardlink")
    _refused(cli, ["convert", child, alias], [vhdx, child])


@pytest.mark.parametrize("how", ["hardlink", "symlink"])
def test_snapshot_child_over_parent(cli, vhdx, how):
    code, _out, err = cli("snapshot", vhdx, _names(vhdx, how))
    assert code == 3 and ("never replaces" in err or "not replaced" in err)


def test_existing_output_needs_force_and_is_replaced_by_rename(cli, vhd, tmp_path):
    report = tmp_path / "report.xml"
    report.write_bytes(b"keep me")
    keep = tmp_path / "old-report.xml"
    os.link(report, keep)  # a hard link sees the old bytes only if the new file was renamed in
    code, _out, err = cli("check", vhd, "--junit", report)
    assert code == 3 and "already exists" in err and "--force" in err
    assert report.read_bytes() == b"keep me"
    code, _out, err = cli("check", vhd, "--junit", report, "--force")
    assert code in (0, 1, 2), err
    assert report.read_bytes().startswith(b"<?xml")
    assert keep.read_bytes() == b"keep me"


def test_symlink_output_needs_force_and_only_the_link_is_replaced(cli, hive, tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"not an input, but not to be written through a link either")
    link = tmp_path / "out.reg"
    link.symlink_to(precious)
    args = ["reg", "export", hive, "HKLM\\SYSTEM\\Select", "-o", link]
    code, _out, err = cli(*args)
    assert code == 3 and "symbolic link" in err
    assert cli(*args, "--force")[0] == 0
    assert not link.is_symlink() and link.read_text().startswith("Windows Registry Editor")
    assert precious.read_bytes().startswith(b"not an input")


def test_output_that_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="a FIFO, not a file an output can replace"):
        outputs.check_output(str(tmp_path / "fifo"), force=True)


def test_seen_input_is_refused_without_being_named(tmp_path):
    """A file read through inputs.py (a chain member, a log) is an input though not named."""
    from offline_ic.inputs import open_readonly

    read = tmp_path / "read.bin"
    read.write_bytes(b"x")
    with open_readonly(str(read)) as fh:
        fh.read()
    with pytest.raises(SafetyRefusal, match="same file as a file this command read"):
        outputs.write_new(str(read), b"y", force=True)
    assert read.read_bytes() == b"x"

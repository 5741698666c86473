"""``fix`` on the command line: the document's shape, fleets (NDJSON, --jobs), input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def images(tmp_path, unpacked) -> list[Path]:
    from tests.windows.conftest import WIN

    out = []
    for name, src in (
        ("a.vhdx", "win10-gpt-dynamic.vhdx.xz"),
        ("b.vhdx", "win10-gpt-fixed.vhdx.xz"),
    ):
        shutil.copyfile(unpacked(WIN / src), tmp_path / name)
        out.append(tmp_path / name)
    return out


def test_the_document_has_the_issue_keys(cli, images):
    code, out, err = cli("fix", images[0], "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == [
        "image",
        "os",
        "dry_run",
        "child",
        "before",
        "actions",
        "after",
        "write",
        "pages_written",
        "bytes_written",
        "verified",
        "result",
        "remaining",
    ]
    assert list(doc["before"]) == ["result", "counts"]
    assert all(list(a) == ["check", "action", "status", "reason"] for a in doc["actions"])
    # "after" is the whole check document of the result, as `check --json` prints it
    code, out, _ = cli("check", images[0], "--json")
    assert code == 0 and doc["after"] == json.loads(out)


def test_a_fleet_prints_one_line_per_image_and_jobs_do_not_change_it(cli, images):
    code, one, err = cli("fix", *images, "--dry-run", "--json", "--quiet")
    assert code == 0, err
    lines = one.splitlines()
    assert [json.loads(line)["image"] for line in lines] == [str(p) for p in images]
    assert all(json.loads(line)["dry_run"] for line in lines)
    code, two, err = cli("fix", *images, "--dry-run", "--json", "--quiet", "--jobs", "2")
    assert code == 0 and two == one, err


def test_a_fleet_exit_code_is_the_worst_image(cli, images, tmp_path):
    missing = tmp_path / "nope.vhdx"
    code, out, err = cli("fix", images[0], missing, "--dry-run", "--json")
    assert code == 2
    records = [json.loads(line) for line in out.splitlines()]
    assert records[1]["error"]["kind"] == "not_found"
    assert err.splitlines()[-1] == "offline-ic: 2 targets: 1 ok, 1 error"


def test_output_names_one_child(cli, images, tmp_path):
    code, _, err = cli("fix", *images, "--output", tmp_path / "c.avhdx")
    assert code == 2 and "--output names one child" in err
    assert not (tmp_path / "c.avhdx").exists()


def test_a_package_that_is_not_a_file_is_an_input_error(cli, images, tmp_path):
    code, _, err = cli("fix", images[0], "--package", tmp_path / "hyperv-daemons.deb")
    assert code == 2 and "hyperv-daemons.deb" in err


def test_a_bad_policy_is_one_error_before_any_image(cli, images, tmp_path):
    policy = tmp_path / "gate.toml"
    policy.write_text('fail = ["windows.*"]\n')
    digest = images[0].read_bytes()
    code, _, err = cli("fix", images[0], "--policy", policy)
    assert code == 2 and "belongs under the [checks] table" in err
    assert images[0].read_bytes() == digest


def test_a_policy_skip_is_not_fixed(cli, images, tmp_path):
    policy = tmp_path / "gate.toml"
    policy.write_text('[checks]\nskip = ["windows.ic.vmictimesync"]\n')
    code, out, err = cli("fix", images[0], "--policy", policy, "--dry-run", "--json")
    assert code == 0, err
    assert "windows.ic.vmictimesync" not in {a["check"] for a in json.loads(out)["actions"]}


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("windows.ic.vmicvs", "windows.ic.vmicvss"),  # a letter short: the family's ids
        ("Windows.IC.vmicvss", "it takes windows.ic.vmicvss ("),  # ids are lower case
        ("azure.windows.rdp.enabeld", "azure.windows.rdp.enabled"),
        ("wndows.*", "windows.*"),  # no family shared: the families
    ],
)
def test_an_only_pattern_that_matches_no_check_id_is_exit_2_naming_the_ids(
    cli, images, tmp_path, pattern, named
):
    """Before: a mistyped --only fixed nothing and said only "skipped" for every finding
    (exit 0 on an image that only warns). Now one line names the pattern and the ids it can
    take, before any image is opened (a fleet included); the API refuses it too."""
    from offline_ic import api
    from offline_ic.errors import InputError

    before = {p: p.read_bytes() for p in images}
    listed = tmp_path / "list.txt"
    listed.write_text("".join(f"{p}\n" for p in images))
    for targets in ([images[0]], ["--from", listed]):
        code, out, err = cli("fix", *targets, "--only", "windows.*", "--only", pattern)
        assert (code, out) == (2, ""), err
        assert err.count("\n") == 1 and f"--only '{pattern}': matches no check id" in err
        assert named in err and "'windows.*'" not in err, err  # only the unknown one
    assert {p: p.read_bytes() for p in images} == before
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".avhdx"]
    with pytest.raises(InputError, match="matches no check id"):
        api.fix(str(images[0]), only=[pattern], dry_run=True)


def test_a_known_id_this_image_does_not_report_says_nothing_to_fix(cli, images):
    """A known check id with no finding on this image is no error: nothing is fixed and the
    text says so (the findings it leaves out are still reported as skipped)."""
    code, out, err = cli("fix", images[0], "--only", "windows.ic.vmicvss", "--dry-run", "--json")
    assert code == 1, err  # windows.ic.vmictimesync still fails: it was not selected
    doc = json.loads(out)
    assert doc["actions"] and {a["status"] for a in doc["actions"]} == {"skipped"}
    code, out, err = cli("fix", images[0], "--only", "windows.ic.vmicvss", "--dry-run")
    assert "nothing to fix: no failing or warning check matches --only" in out
    code, out, _ = cli("fix", images[0], "--only", "windows.ic.*", "--dry-run")
    assert "planned" in out and "nothing to fix" not in out


def test_the_disk_format_reason_names_the_image_and_its_command_runs(
    cli, images, tmp_path, monkeypatch
):
    """Before: the reason of azure.disk.format said `offline-ic convert IMAGE NEW.vhd ...`.
    It names the disk, shell-quoted (a hostile name is exact in JSON and escaped in text, as
    all host text), and the command it gives makes the disk Azure takes."""
    import shlex

    from offline_ic.escaping import terminal

    name = tmp_path / "web 01 \x1b[2J\n'x'.vhdx"
    images[0].rename(name)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("fix", name, "--profile", "azure", "--dry-run", "--json")
    reason = {a["check"]: a for a in json.loads(out)["actions"]}["azure.disk.format"]["reason"]
    assert "IMAGE" not in reason
    command = reason.split("`")[1]
    argv = shlex.split(command)
    assert argv == ["offline-ic", "convert", str(name), "web 01 \x1b[2J\n'x'-azure.vhd"] + [
        "--format",
        "vhd-fixed",
    ]
    code, out, _ = cli("fix", name, "--profile", "azure", "--dry-run")
    assert "\x1b" not in out
    lines = out.splitlines()
    assert f"    why: {terminal(reason)}" in lines
    assert f"still failing: azure.disk.format: {terminal(reason)}" in lines
    code, _, err = cli(*argv[1:])
    assert code == 0, err
    code, out, _ = cli("check", tmp_path / argv[3], "--profile", "azure", "--json")
    assert {c["id"]: c["status"] for c in json.loads(out)["checks"]}["azure.disk.format"] == "pass"


def test_both_disk_reasons_name_the_image():
    from offline_ic.checks.model import CheckResult
    from offline_ic.workflows.fix import not_fixable_reason

    for cid in ("azure.disk.format", "azure.disk.size_alignment"):
        result = CheckResult(cid, "fail", "x")
        reason = not_fixable_reason(result, "D:/VMs/web 01.vhdx")
        assert "IMAGE" not in reason and "<convert>" not in reason
        assert "`offline-ic convert 'D:/VMs/web 01.vhdx' 'web 01-azure.vhd' --format" in reason


def test_a_vm_folder_check_names_its_boot_disk_in_the_convert_command(cli, images, tmp_path):
    """Before: `check --profile azure` of a VM folder told the user to convert the folder
    (`convert` refuses a directory); the command names the boot disk."""
    import shlex

    from tests.helpers import any_gen2_vm_folder

    folder = any_gen2_vm_folder(tmp_path, images[0])
    disk = folder / "Virtual Hard Disks" / "Default Generation 2.vhdx"
    code, out, _ = cli("check", folder, "--profile", "azure", "--json")
    detail = {c["id"]: c for c in json.loads(out)["checks"]}["azure.disk.format"]["detail"]
    command = shlex.split(detail.split("; run: ")[1])
    assert command[:4] == ["offline-ic", "convert", str(disk), "Default Generation 2-azure.vhd"]


def test_no_guest_is_an_input_error_and_nothing_is_written(cli, tmp_path):
    import random

    path = tmp_path / "random.bin"
    path.write_bytes(random.Random(22).randbytes(3_000_000))
    before = path.read_bytes()
    code, out, err = cli("fix", path, "--json")
    assert code == 2 and json.loads(out)["error"]["kind"] == "not_found"
    assert "no Windows volume" in err and err.count("\n") == 1
    assert path.read_bytes() == before


# ------------------------------------------------------------------- the Linux path's wiring
@pytest.fixture(scope="module")
def debian_blacklisted(tmp_path_factory) -> Path:
    """The trimmed Debian image whose modprobe.d blacklists hv_utils (built by the script)."""
    from tests.helpers import script_module

    out = tmp_path_factory.mktemp("linux")
    built = script_module("build_linux_testdata").build(out, ["debian-blacklisted"])
    if "debian-blacklisted" not in built:
        pytest.skip("scripts/build_linux_testdata.py could not build the Debian image here")
    return built["debian-blacklisted"]


@pytest.fixture
def debian(tmp_path, debian_blacklisted) -> Path:
    copy = tmp_path / "debian.raw"
    shutil.copyfile(debian_blacklisted, copy)
    return copy


@pytest.fixture
def no_libguestfs(monkeypatch):
    """libguestfs is not installed (guestfs_missing gives the install line); the engine must
    then not be started at all."""
    import offline_ic.workflows.guest_edit as engine

    def never(*_a, **_k):
        raise AssertionError("the libguestfs engine was started")

    monkeypatch.setattr(engine, "guestfs_missing", lambda: engine.INSTALL_HINT)
    monkeypatch.setattr(engine, "apply_guest_edits", never)
    return engine.INSTALL_HINT


def test_a_linux_dry_run_prints_the_plan_without_the_appliance(cli, debian, no_libguestfs):
    before = debian.read_bytes()
    code, out, err = cli("fix", debian, "--dry-run", "--json")
    assert code == 0, err
    doc = json.loads(out)
    blacklist = next(a for a in doc["actions"] if a["check"] == "linux.blacklist.hv_utils")
    assert blacklist["status"] == "planned" and "modprobe.d" in blacklist["action"]
    assert "pages_written" not in doc and doc["bytes_written"] == 0 and doc["after"] is None
    code, out, _ = cli("fix", debian, "--dry-run")
    assert code == 0 and "not started, nothing written" in out
    assert debian.read_bytes() == before


def test_without_libguestfs_linux_fixes_are_exit_2_and_the_rest_works(
    cli, debian, images, no_libguestfs
):
    before = debian.read_bytes()
    code, _out, err = cli("fix", debian)
    assert code == 2 and no_libguestfs in err and err.count("\n") == 1
    assert debian.read_bytes() == before
    assert cli("check", debian)[0] == 1  # the checks do not need it
    code, _out, err = cli("fix", images[0])  # nor do Windows fixes
    assert code == 0, err


def test_a_linux_fix_hands_the_planned_edits_to_the_engine(cli, debian, monkeypatch, tmp_path):
    """The edits the plan made, in the engine's order, to the image (or the child); the
    document carries what the engine reports."""
    import offline_ic.workflows.guest_edit as engine
    from offline_ic.checks.report import Report
    from offline_ic.guest.linux.remedies import ordered_edits, plan_linux_remedies
    from offline_ic.target import open_target

    calls = []

    def fake(target, edits, *, output=None):
        calls.append((target, list(edits), output))
        return engine.GuestEditResult(target, output or target, 0, child=output)

    monkeypatch.setattr(engine, "guestfs_missing", lambda: None)
    monkeypatch.setattr(engine, "apply_guest_edits", fake)
    image = tmp_path / "debian.vhdx"  # an --output child needs a VHDX parent
    assert cli("convert", debian, image)[0] == 0
    child = tmp_path / "fixed.avhdx"
    code, out, err = cli("fix", image, "--output", child, "--json")
    doc = json.loads(out)
    with open_target(str(image)) as opened:
        results = Report.from_dict({"image": "x", **doc["after"]}).checks
        expected = ordered_edits(plan_linux_remedies(opened.guest, results))
    assert len(calls) == 1 and calls[0][0] == str(image) and calls[0][2] == str(child)
    assert [type(e) for e in calls[0][1]] == [type(e) for e in expected]
    assert [getattr(e, "path", None) for e in calls[0][1]] == [
        getattr(e, "path", None) for e in expected
    ]
    assert doc["write"]["written_to"] == str(child) and doc["bytes_written"] == 0
    assert code == 1  # the fake wrote nothing: the blacklist still fails, and is named
    assert [r["check"] for r in doc["remaining"]] == ["linux.blacklist.hv_utils"]


def test_a_linux_fix_with_nothing_selected_still_makes_the_child(
    cli, debian, tmp_path, no_libguestfs
):
    image = tmp_path / "debian.vhdx"
    assert cli("convert", debian, image)[0] == 0
    before = image.read_bytes()
    child = tmp_path / "next.avhdx"
    code, out, err = cli("fix", image, "--only", "windows.*", "--output", child, "--json")
    doc = json.loads(out)
    assert code == 1, err  # the blacklist is left (skipped) and named
    assert {a["status"] for a in doc["actions"]} == {"skipped"}
    assert child.exists() and doc["write"]["written_to"] == str(child)
    assert image.read_bytes() == before
    code, out, _ = cli("check", child, "--json")
    assert code == 1 and json.loads(out)["counts"] == doc["before"]["counts"]
    code, _, err = cli("fix", debian, "--only", "windows.*", "--output", tmp_path / "c.avhdx")
    assert code == 2 and "needs a VHDX" in err


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_parent_disk_is_refused_with_advice_fix_can_follow(cli, images, tmp_path, dry_run):
    """Before: the refusal said "or --force", an option `fix` does not have (exit 2 when
    tried); it names --output, which `fix` takes, and nothing is written."""
    import hashlib

    child = tmp_path / "child.avhdx"
    code, _, err = cli("snapshot", images[0], child)
    assert code == 0, err
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (images[0], child)}
    code, out, err = cli("fix", images[0], *dry_run)
    assert code == 3 and out == "", err
    assert "is the parent of child.avhdx" in err and "--output" in err
    assert "--force" not in err
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before


@pytest.mark.parametrize("case", ["exists", "is the image", "no such directory", "raw image"])
def test_a_dry_run_makes_the_refusals_of_output_that_the_real_run_makes(
    cli, images, tmp_path, unpacked, case
):
    """Before: ``--dry-run --output X`` said "would write ..." (exit 0) for an X the real run
    then refused; a missing directory was reported as the internal ``X.offline-ic-tmp``."""
    import hashlib

    from tests.windows.conftest import WIN

    image = images[0]
    if case == "raw image":
        image = tmp_path / "dirty.raw"
        shutil.copyfile(unpacked(WIN / "win10-dirty-mbr.raw.xz"), image)
    output = {
        "exists": images[1],
        "is the image": image,
        "no such directory": tmp_path / "nope" / "child.avhdx",
        "raw image": tmp_path / "child.avhdx",
    }[case]
    want_code, want_text = {
        "exists": (3, "already exists"),
        "is the image": (3, "an output never replaces an input"),
        "no such directory": (2, f"directory {tmp_path / 'nope'} does not exist"),
        "raw image": (2, "--output needs a VHDX/AVHDX parent"),
    }[case]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    for dry_run in (["--dry-run"], []):
        code, out, err = cli("fix", image, "--output", output, *dry_run)
        assert (code, out) == (want_code, ""), (dry_run, err)
        assert want_text in err and "offline-ic-tmp" not in err, err
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()} == before


def test_guest_program_output_is_exact_in_json_and_escaped_in_text(
    cli, debian, monkeypatch, tmp_path
):
    """What a guest program printed (terminal escapes, newlines) is the guest's text: JSON
    carries it exactly, the text rendering and the error line escape it (escaping.py)."""
    import offline_ic.workflows.guest_edit as engine
    from offline_ic.workflows.appliance import ApplianceError

    hostile = "ok\x1b[2J\x1b]0;pwned\x07\nSetting up \u202ehv\r\n"

    def done(target, edits, *, output=None):
        result = engine.GuestEditResult(target, target, 4096, verified=["libvhdi"])
        result.outcomes = [engine.EditOutcome(e, "done", hostile) for e in edits]
        return result

    monkeypatch.setattr(engine, "guestfs_missing", lambda: None)
    monkeypatch.setattr(engine, "apply_guest_edits", done)
    code, out, err = cli("fix", debian, "--json")
    doc = json.loads(out)
    assert {e["output"] for e in doc["write"]["edits"]} == {hostile}
    assert "\x1b" not in out and "\r" not in out  # json_text: \u001b, \r
    assert "\u202e" not in out and "\\u202e" in out  # a bidi override: escaped, same value
    code, out, err = cli("fix", debian)
    assert "\x1b" not in out + err and "\u202e" not in out + err and "\r" not in out + err

    def failing(target, edits, *, output=None):
        raise ApplianceError(f"run 'update-initramfs': exit status 1 in the guest: {hostile}")

    monkeypatch.setattr(engine, "apply_guest_edits", failing)
    code, out, err = cli("fix", debian)
    assert code == 2 and err.count("\n") == 1, err
    assert "\x1b" not in err and "\\x1b[2J" in err and "\\u202e" in err

"""Host side: what is not a .vmcx is one line, exit 2. (The tests of the real .vmcx files,
AGPL in ../shared, are in tests/host/test_real_vmcx.py: one skip on a clone without them.)"""

from __future__ import annotations


def test_not_a_vmcx(cli, tmp_path, win10_dynamic):
    bogus = tmp_path / "vm.vmcx"
    bogus.write_bytes(b"\x14\x20\x28\x01" + bytes(70000))
    for path in (bogus, win10_dynamic):
        code, out, err = cli("inspect", win10_dynamic, "--vmcx", path)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert "not a readable Hyper-V configuration file" in err

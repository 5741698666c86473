"""Hives written by another tool (hivexregedit --merge) read right, and survive our edits."""

from __future__ import annotations

import subprocess

import pytest

from offline_ic.registry import Hive
from offline_ic.registry.check import check_hive
from offline_ic.registry.editor import HiveEditor

from .conftest import hivex_export, need


def _reg_text() -> str:
    lines = ["Windows Registry Editor Version 5.00", ""]
    lines += ["[\\Grown]", '"sz"="hello"', '"dw"=dword:0000002a', '@="default"']
    big = ",".join(f"{i % 256:02x}" for i in range(30000))
    lines += [f'"big"=hex:{big}', '"multi"=hex(7):61,00,00,00,62,00,00,00,00,00', ""]
    for i in range(300):
        lines += [f"[\\Grown\\Sub{i:03d}]", f'"n"=dword:{i:08x}', ""]
    lines += ["[\\Grown\\Ünïcode ключ]", '"名前"="値"', ""]
    return "\r\n".join(lines)


@pytest.mark.parametrize("which", ["sam", "win10"])
def test_hivex_grown_hive(which, hive_copy, tmp_path):
    tool = need("hivexregedit")
    path = hive_copy(which, "H")
    reg = tmp_path / "grow.reg"
    reg.write_text(_reg_text(), encoding="utf-8")
    subprocess.run([tool, "--merge", "--encoding", "utf-16le", str(path), str(reg)], check=True)
    hive = Hive.open(path)
    ours = {
        "\\" + k.path.upper(): {v.name: (v.type, v.raw) for v in k.values()} for k in hive.walk()
    }
    assert ours == hivex_export(path)
    grown = hive.open_key("grown")
    assert grown.subkey_count == 301 and grown.value("big").raw == bytes(
        i % 256 for i in range(30000)
    )
    assert hive.open_key("Grown\\ünïcode КЛЮЧ").value("名前") is not None
    rep = check_hive(path.read_bytes())
    # hivex hashes non-ASCII names differently from Windows (upper-cased UTF-16 code units,
    # h = h*37 + c): our check reports exactly that key and nothing else
    assert len(rep.problems) == 1 and "Ünïcode ключ" in rep.problems[0]
    assert "lh hash 0x0974eb16 is wrong" in rep.problems[0]
    # our edits on top of a hivex-written hive
    ed = HiveEditor(path.read_bytes())
    ed.set_value(r"Grown\Sub150", "n", 4, 7)
    ed.create_key(r"Grown\Sub150a")
    ed.delete_value(r"Grown\Sub151", "n")
    ed.delete_key(r"Grown\Sub151")
    ed.commit()
    out = tmp_path / "edited"
    out.write_bytes(ed.buf)
    theirs = hivex_export(out, r"\Grown")
    assert theirs[r"\GROWN\SUB150"] == {"n": (4, b"\x07\0\0\0")}
    assert r"\GROWN\SUB150A" in theirs and r"\GROWN\SUB151" not in theirs

"""Hyper-V 2012 / 2012 R2 XML VM configurations (testdata/host/, written by
scripts/build_host_testdata.py).

What was checked against which source: the XML files follow the public shape of those
configs (``<configuration>``, typed leaves, ``properties``/``manifest``/``_<GUID>_``
sections); ``test_xml_tree_uses_the_real_vmcx_names`` checks that every section, property,
manifest and drive field the XML uses is one that dissect.hypervisor reads from the real
Hyper-V ``test.vmcx`` (../shared/testdata-real/vmcx), so the one fact reader
(``vmcx.config_from_tree``) means the same thing for both formats.
"""

from __future__ import annotations

import pytest

from offline_ic.errors import CorruptImageError
from offline_ic.host.vmfolder import read_config
from offline_ic.host.xmlconfig import read_xml_config
from tests.host.conftest import HOST

HB_OFF_GSI_ON = HOST / "2012r2-heartbeat-off-gsi-on.xml"
GEN2_DEFAULTS = HOST / "2012r2-gen2-defaults.xml"


def states(config):
    return {c.service: (c.offered, c.enabled) for c in config.components}


def test_heartbeat_off_guest_interface_on():
    config = read_xml_config(str(HB_OFF_GSI_ON))
    assert HB_OFF_GSI_ON.read_bytes()[:2] == b"\xff\xfe"  # UTF-16 LE, as Hyper-V writes
    assert (config.name, config.vm_id, config.generation, config.version, config.format) == (
        "web-01",
        "0C3F6A52-1D8E-4B7A-9F21-6E4B2D9A7C10",
        1,
        "5.0",
        "xml",
    )
    got = states(config)
    assert got.pop("vmicheartbeat") == (True, False)
    assert got.pop("vmicguestinterface") == (True, True)
    assert got.pop("vmicrdv") == (False, False)  # not in this manifest
    assert set(got.values()) == {(True, True)}
    assert config.disks == ["D:\\Hyper-V\\web-01\\Virtual Hard Disks\\web-01.vhdx"]


def test_generation2_defaults_utf8():
    config = read_config(str(GEN2_DEFAULTS))
    assert GEN2_DEFAULTS.read_bytes().startswith(b"<?xml")
    assert (config.generation, config.version) == (2, "5.0")
    assert states(config)["vmicguestinterface"] == (True, False)  # host default: off
    assert [(d.type, d.path) for d in config.drives] == [
        ("VHD", "E:\\VMs\\db-02\\Virtual Hard Disks\\db-02.vhdx"),
        ("ISO", "E:\\ISO\\tools.iso"),
    ]


def test_server_2012_version():
    assert read_config(str(HOST / "2012-gen1.xml")).version == "4.0"


def test_committed_files_are_what_the_script_writes(host_builder):
    for name, spec in host_builder.FILES.items():
        assert (HOST / name).read_bytes() == host_builder.config_xml(**spec), name


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("vm.xml", b'<?xml version="1.0"?><catalog><book/></catalog>', "not a disk image or VM"),
        ("notes.xml", b"just some text\n", "not a disk image or VM configuration"),
        ("x.vmcx", b"\0" * 4096, "not a disk image or VM configuration"),
        ("cut.xml", None, "not a readable Hyper-V configuration file"),
        (
            "evil.xml",
            b'<?xml version="1.0"?><!DOCTYPE configuration [<!ENTITY a "b">]>'
            b"<configuration>&a;</configuration>",
            "DOCTYPE",
        ),
    ],
)
def test_bad_configs_are_one_line_exit_2(tmp_path, cli, name, content, words):
    path = tmp_path / name
    if content is None:  # a real config, truncated in the middle
        raw = HB_OFF_GSI_ON.read_bytes()
        content = raw[: len(raw) // 2]
    path.write_bytes(content)
    code, out, err = cli("inspect", path)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert words in err


def test_truncated_xml_is_a_clear_error(tmp_path):
    raw = GEN2_DEFAULTS.read_bytes()
    path = tmp_path / "cut.xml"
    path.write_bytes(raw[:200])
    with pytest.raises(CorruptImageError, match="not a readable Hyper-V configuration"):
        read_config(str(path))


def test_foreign_shapes_do_not_crash(tmp_path):
    """Untrusted configs: a property with children instead of a value, deep nesting."""
    odd = tmp_path / "odd.xml"
    odd.write_text(
        '<?xml version="1.0"?><configuration><properties><subtype><x type="integer">1</x>'
        '</subtype><name><y type="string">n</y></name></properties></configuration>'
    )
    config = read_config(str(odd))
    assert (config.generation, config.name, config.disks) == (None, None, [])
    deep = tmp_path / "deep.xml"
    deep.write_text("<configuration>" + "<a>" * 100 + "</a>" * 100 + "</configuration>")
    with pytest.raises(CorruptImageError, match="deep.xml: .*deeper than 32"):
        read_config(str(deep))


def test_sniffer_is_linear_on_a_run_of_empty_comments(tmp_path, cli):
    """585 ``<!---->`` then zeros: the old regular expression backtracked exponentially (20
    repetitions took 44 s, 22 never ended); the scan answers at once, and the file is one
    line, exit 2."""
    import time

    from offline_ic.host.xmlconfig import is_xml_config

    path = tmp_path / "comments.xml"
    path.write_bytes(b"<!---->" * 585 + b"\0" * 4096)
    start = time.monotonic()
    assert not is_xml_config(str(path))
    assert time.monotonic() - start < 1.0
    code, out, err = cli("inspect", path)
    assert code == 2 and out == "" and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"<configuration>", True),
        (b'\r\n <?xml version="1.0"?>\n<!-- a -->\n<!---->\t<configuration ver="1">', True),
        (b"<!DOCTYPE configuration [<!ENTITY a '>'>]>\n<configuration>", True),
        (b"<!DOCTYPE configuration>\n<configuration\n>", True),
        (b"<configurations>", False),
        (b"<!-- unterminated <configuration>", False),
        (b'<?xml version="1.0">', False),
        (b"<!DOCTYPE configuration [<configuration>", False),
        (b"text <configuration>", False),
        ("<!---->" * 30 + "<configuration>", True),
    ],
)
def test_sniffer_reads_declaration_comments_doctype(tmp_path, head, expected):
    from offline_ic.host.xmlconfig import is_xml_config

    path = tmp_path / "x.xml"
    data = head.encode("utf-16") if isinstance(head, str) else head
    path.write_bytes(data)
    assert is_xml_config(str(path)) is expected

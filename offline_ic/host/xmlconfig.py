"""Hyper-V 2012 / 2012 R2 VM configurations: ``<VM id>.xml`` (before the binary .vmcx).

The XML holds the same tree as a .vmcx: ``<configuration>`` with ``<properties>`` (name,
global_id, subtype, version), ``<manifest>`` (vdevNNN: device GUID, name), a section
``<_<device guid>_>`` per device (integration components carry ``<Enabled type="bool">``,
storage controllers ``controllerN/driveN`` with ``pathname`` and ``type``). Each leaf has a
``type`` attribute (string, integer, bool, bytes); we turn the document into the same nested
dict the .vmcx reader gives, so ``vmcx.config_from_tree`` decides the facts for both.

The format is told by content (a ``<configuration>`` root element, UTF-8 or UTF-16 as
Hyper-V writes it), never by the ``.xml`` name. Configs are untrusted input: the file size
is bounded and a DOCTYPE (entity declarations) is refused before parsing.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from typing import Any

from offline_ic.errors import CorruptImageError, NotFoundError
from offline_ic.host.vmcx import HostConfig, config_from_tree
from offline_ic.inputs import open_readonly

MAX_XML_BYTES = 16 << 20  # real configs are tens of KiB
_SNIFF_BYTES = 4096
_XML_SPACE = " \t\r\n"


def _starts_like_config(text: str) -> bool:
    """Does ``text`` begin with an optional declaration, comments and DOCTYPE, then a
    ``<configuration`` start tag? One forward scan (every step a ``find`` from where the
    previous one ended): linear in the prefix, whatever it holds (a backtracking regular
    expression took exponential time on a run of ``<!---->``)."""
    pos = _skip_space(text, 0)
    if text.startswith("<?xml", pos):
        end = text.find(">", pos)
        if end < 0 or text[end - 1] != "?":
            return False
        pos = _skip_space(text, end + 1)
    while text.startswith("<!--", pos):
        end = text.find("-->", pos + 4)
        if end < 0:
            return False
        pos = _skip_space(text, end + 3)
    if text.startswith("<!DOCTYPE", pos):
        pos = _doctype_end(text, pos + len("<!DOCTYPE"))
        if pos < 0:
            return False
        pos = _skip_space(text, pos)
    tag = "<configuration"
    return text.startswith(tag, pos) and text[pos + len(tag) : pos + len(tag) + 1] in (
        tuple(_XML_SPACE) + (">",)
    )


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _XML_SPACE:
        pos += 1
    return pos


def _doctype_end(text: str, pos: int) -> int:
    """Index after the ``>`` closing a DOCTYPE whose name part starts at ``pos`` (an internal
    subset ``[...]`` may hold ``>``), or -1. The DOCTYPE is refused later; the sniffer only
    has to see the document is meant as a configuration."""
    while pos < len(text) and text[pos] not in "[>":
        pos += 1
    if pos < len(text) and text[pos] == "[":
        close = text.find("]", pos + 1)
        if close < 0:
            return -1
        pos = _skip_space(text, close + 1)
    return pos + 1 if pos < len(text) and text[pos] == ">" else -1


def _decode(raw: bytes) -> str:
    """Text of an XML file in UTF-16 (with BOM, as Hyper-V writes) or UTF-8."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    return raw.decode("utf-8", errors="replace")


def is_xml_config(path: str) -> bool:
    """Does ``path`` start like a Hyper-V VM configuration XML document?"""
    with open_readonly(path, "VM configuration") as fh:
        head = fh.read(_SNIFF_BYTES)
    if len(head) % 2 and head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        head = head[:-1]
    return _starts_like_config(_decode(head))


def read_xml_config(path: str) -> HostConfig:
    """Parse a 2012/2012 R2 VM configuration; anything else is one clear error."""
    try:
        with open_readonly(path, "VM configuration") as fh:
            raw = fh.read(MAX_XML_BYTES + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    if len(raw) > MAX_XML_BYTES:
        raise CorruptImageError(f"{path}: larger than {MAX_XML_BYTES >> 20} MiB, not a VM config")
    text = _decode(raw)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise CorruptImageError(f"{path}: XML with a DOCTYPE is not a Hyper-V configuration")
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)  # the declaration names the old encoding
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CorruptImageError(
            f"{path}: not a readable Hyper-V configuration file (XML: {exc})"
        ) from None
    if root.tag != "configuration":
        raise CorruptImageError(f"{path}: XML root is <{root.tag}>, not a Hyper-V <configuration>")
    try:
        tree = _node(root, 0)
    except RecursionError:
        raise CorruptImageError(f"{path}: VM configuration XML nested too deep") from None
    except CorruptImageError as exc:
        raise CorruptImageError(f"{path}: {exc}") from None
    return config_from_tree(path, {"configuration": tree}, "xml")


def _node(elem: ET.Element, depth: int) -> Any:
    """An element as the .vmcx reader's tree: children as a dict, typed leaves as values."""
    if depth > 32:
        raise CorruptImageError("VM configuration XML nested deeper than 32 levels")
    if len(elem) == 0 and "type" in elem.attrib:
        return _leaf(elem.attrib["type"], elem.text or "")
    return {child.tag: _node(child, depth + 1) for child in elem}


def _leaf(kind: str, text: str) -> Any:
    kind = kind.lower()
    if kind == "bool":
        return text.strip().lower() == "true"
    if kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            return None
    return text

"""Values in the words of a .reg file: parse what a user types, format what we show.

Why: users know ``dword:00000004`` and ``hex(7):…`` from regedit exports; the CLI takes
and prints those words so that nothing new has to be learned.
"""

from __future__ import annotations

import re

from offline_ic.errors import InputError, quoted
from offline_ic.registry.hive import RegType, Value, decode_data, type_name

_HEX_TYPE = re.compile(r"^hex(?:\(([0-9a-fA-F]{1,8})\))?:(.*)$", re.S)


def _split_commas(text: str) -> list[str]:
    """Split on commas outside double quotes; strip quotes and \\-escapes inside them."""
    out: list[str] = []
    cur: list[str] = []
    in_quote = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_quote:
            if c == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_quote = False
            else:
                cur.append(c)
        elif c == '"':
            in_quote = True
        elif c == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if in_quote:
        raise InputError(f"unterminated quote in {quoted(text)}")
    out.append("".join(cur))
    return out


def _hex_bytes(body: str) -> bytes:
    body = body.replace("\\\n", "").replace(" ", "").replace("\n", "").strip().rstrip(",")
    if not body:
        return b""
    try:
        return bytes(int(b, 16) for b in body.split(","))
    except ValueError:
        raise InputError(
            f"bad hex bytes {quoted(body[:40])} (expected e.g. hex:01,ff,00)"
        ) from None


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def parse_reg_value(text: str) -> tuple[int, object]:
    """(type, data) from .reg words: dword:, qword:, hex:, hex(N):, expand:, multi:, strings.

    ``dword:``/``qword:`` take hexadecimal as regedit writes them (``dword:4``,
    ``dword:0000000a``); ``expand:TEXT`` and ``multi:A,B`` are shorthands for REG_EXPAND_SZ
    and REG_MULTI_SZ; a plain or double-quoted string is REG_SZ.
    """
    low = text.lower()
    if low.startswith("dword:"):
        return RegType.DWORD, _hex_int(text[6:], 0xFFFFFFFF, "dword")
    if low.startswith("qword:"):
        return RegType.QWORD, _hex_int(text[6:], 0xFFFFFFFFFFFFFFFF, "qword")
    m = _HEX_TYPE.match(text)
    if m and (m.group(1) is not None or low.startswith("hex:")):
        vtype = int(m.group(1), 16) if m.group(1) else RegType.BINARY
        return vtype, _hex_bytes(m.group(2))
    if low.startswith("expand:"):
        return RegType.EXPAND_SZ, _unquote(text[7:])
    if low.startswith("multi:"):
        parts = _split_commas(text[6:])
        if parts == [""]:
            return RegType.MULTI_SZ, []
        if any(p == "" for p in parts):
            raise InputError("multi: strings must not be empty (an empty string ends the list)")
        return RegType.MULTI_SZ, parts
    return RegType.SZ, _unquote(text)


def _hex_int(body: str, limit: int, what: str) -> int:
    body = body.strip()
    try:
        value = int(body, 16)
    except ValueError:
        raise InputError(
            f"bad {what} {quoted(body)}: hexadecimal expected, e.g. {what}:00000004"
        ) from None
    if not 0 <= value <= limit:
        raise InputError(f"{what} {quoted(body)} out of range")
    return value


def format_reg_value(value: Value) -> str:
    """One value as a .reg line: ``"Name"=dword:00000003``."""
    name = (
        "@"
        if value.name == ""
        else '"' + value.name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    )
    return f"{name}={format_reg_data(value.type, value.raw)}"


def format_reg_data(vtype: int, raw: bytes) -> str:
    """The right-hand side of a .reg line for these bytes."""
    data = decode_data(vtype, raw)
    if vtype == RegType.DWORD and isinstance(data, int) and len(raw) == 4:
        return f"dword:{data:08x}"
    if vtype == RegType.SZ and isinstance(data, str) and raw == (data + "\x00").encode("utf-16-le"):
        return '"' + data.replace("\\", "\\\\").replace('"', '\\"') + '"'
    hexed = ",".join(f"{b:02x}" for b in raw)
    return f"hex:{hexed}" if vtype == RegType.BINARY else f"hex({vtype:x}):{hexed}"


def format_shown_data(vtype: int, raw: bytes) -> str:
    """The data of a value in a key listing (``reg get``/``hive get`` of a key), decoded as
    ``hivexget`` shows it and in the words ``reg set``/``hive set`` take: ``"text"``,
    ``expand:"%SystemRoot%\\x"``, ``multi:"a","b"``. Text with a character that is not
    printable stays hex, so that no value can add a line; ``.reg``-exact bytes are what
    ``reg export`` writes."""
    data = decode_data(vtype, raw)
    if vtype in (RegType.SZ, RegType.EXPAND_SZ) and isinstance(data, str):
        if not data.isprintable():
            return f"hex({vtype:x}):" + ",".join(f"{b:02x}" for b in raw)
        text = _quoted(data)
        return text if vtype == RegType.SZ else f"expand:{text}"
    if vtype == RegType.MULTI_SZ and isinstance(data, list):
        if not (data and all(isinstance(d, str) and d.isprintable() for d in data)):
            return f"hex({vtype:x}):" + ",".join(f"{b:02x}" for b in raw)
        return "multi:" + ",".join(_quoted(d) for d in data)
    return format_reg_data(vtype, raw)


def format_shown_value(value: Value) -> str:
    """One value of a key listing: ``"Name"=expand:"%SystemRoot%\\x"`` (see above)."""
    name = "@" if value.name == "" else _quoted(value.name)
    return f"{name}={format_shown_data(value.type, value.raw)}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def value_json(value: Value) -> dict:
    """A value for JSON output: decoded data where it decodes, hex otherwise, always raw hex."""
    data = value.data
    return {
        "name": value.name,
        "type": type_name(value.type),
        "type_code": value.type,
        "data": data.hex() if isinstance(data, bytes) else data,
        "raw_hex": value.raw.hex(),
    }


def value_text(value: Value) -> str:
    """A value's data as plain text (like hivexget): strings as is, numbers in decimal."""
    data = value.data
    if isinstance(data, list):
        return "\n".join(data)
    if isinstance(data, bytes):
        return format_reg_data(value.type, value.raw)
    return str(data)

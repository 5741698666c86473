"""Values in the words users know: parse what a user types, format what we show.

Why: users know ``dword:00000004`` and ``hex(7):…`` from regedit exports, and
``REG_DWORD 10`` from reg.exe; the CLI takes both (``parse_value_spec``, the one parser of
``reg set`` and ``hive set``) and prints the .reg words, so that nothing new has to be
learned. The two spell numbers differently, as their tools do: ``dword:0000000a`` is
hexadecimal (regedit), ``REG_DWORD 10`` decimal (reg.exe; ``0x0a`` for hexadecimal).
Data without a type takes the type of the value it replaces (``resolve_spec``), so that a
bare ``0`` never turns a REG_DWORD into the string "0".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from offline_ic.errors import InputError, SafetyRefusal, quoted
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


# --- reg set / hive set data: typed or untyped, .reg or reg.exe words ------------------------

_REG_WORDS = ("dword:", "qword:", "hex:", "expand:", "multi:")
_TYPE_WORD = re.compile(r"^(REG_[A-Z_]+)(?:[: ](.*))?$", re.S | re.I)
TYPE_NAMES = {type_name(t): int(t) for t in RegType}


@dataclass(frozen=True)
class ValueSpec:
    """Data for one value as the user gave it: ``type`` None means "the type of the value
    it replaces" (REG_SZ for a new value); ``reg_words`` True: .reg words (``dword:``
    hexadecimal), else reg.exe words (numbers decimal or ``0x`` hexadecimal)."""

    type: int | None
    text: str
    reg_words: bool = False

    @property
    def words(self) -> str:
        """How the user wrote it, for messages."""
        if self.reg_words or self.type is None:
            return self.text
        return f"{type_name(self.type)} {self.text}"


def reg_type_code(word: str) -> int:
    """``REG_DWORD`` (any case) -> 4; InputError naming the known types otherwise."""
    code = TYPE_NAMES.get(word.upper())
    if code is None:
        known = ", ".join(n for n in TYPE_NAMES if "RESOURCE" not in n)
        raise InputError(f"unknown value type {quoted(word)} (known: {known})")
    return code


def parse_value_spec(word: str, type_word: str | None = None) -> ValueSpec:
    """What ``reg set``/``hive set`` were given: ``-t TYPE`` with DATA, ``REG_TYPE:DATA`` /
    ``REG_TYPE DATA``, .reg words (``dword:4``, ``hex(7):…``, ``"quoted"``), or bare data
    (the existing value's type). Explicit data is parsed here: bad data is exit 2 before
    anything is opened."""
    if type_word is not None:
        spec = ValueSpec(reg_type_code(type_word), word)
    elif (m := _TYPE_WORD.match(word)) and m.group(1).upper() in TYPE_NAMES:
        spec = ValueSpec(TYPE_NAMES[m.group(1).upper()], m.group(2) or "")
    elif word.lower().startswith(_REG_WORDS) or _HEX_TYPE.match(word) or _is_quoted(word):
        return ValueSpec(parse_reg_value(word)[0], word, reg_words=True)
    else:
        return ValueSpec(None, word)
    spec_data(spec, spec.type or 0)  # parses or raises
    return spec


def _is_quoted(word: str) -> bool:
    return len(word) >= 2 and word[0] == '"' and word[-1] == '"'


def spec_data(spec: ValueSpec, vtype: int) -> object:
    """The data of ``spec`` as type ``vtype`` (for ``editor.encode_value``); InputError when
    the words are not data of that type."""
    if spec.reg_words:
        return parse_reg_value(spec.text)[1]
    text = spec.text
    what = type_name(vtype)
    if vtype in (RegType.DWORD, RegType.DWORD_BIG_ENDIAN, RegType.QWORD):
        limit = 0xFFFFFFFFFFFFFFFF if vtype == RegType.QWORD else 0xFFFFFFFF
        return _number(text, limit, what)
    if vtype in (RegType.SZ, RegType.EXPAND_SZ, RegType.LINK):
        return text
    if vtype == RegType.MULTI_SZ:  # reg.exe's separator: the two characters \0
        parts = text.split("\\0") if text else []
        if any(p == "" for p in parts):
            raise InputError(
                f"{what} {quoted(text)}: empty string in the list (separate strings with \\0)"
            )
        return parts
    return _hex_digits(text, what)


def _number(text: str, limit: int, what: str) -> int:
    body = text.strip()
    try:
        value = int(body[2:], 16) if body.lower().startswith("0x") else int(body, 10)
    except ValueError:
        raise InputError(
            f"{quoted(text)} is not a {what} number (decimal as reg.exe takes it, e.g. 10, "
            f"or 0x0a; .reg words: dword:0000000a)"
        ) from None
    if not 0 <= value <= limit:
        raise InputError(f"{what} {quoted(text)} out of range 0..{limit}")
    return value


def _hex_digits(text: str, what: str) -> bytes:
    """reg.exe's REG_BINARY data: hex digits (``01ff``), commas and spaces allowed."""
    body = re.sub(r"[\s,]", "", text)
    if len(body) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", body):
        raise InputError(f"{what} {quoted(text)}: hexadecimal bytes expected, e.g. 01ff00")
    return bytes.fromhex(body)


def resolve_spec(
    spec: ValueSpec, existing: int | None, *, change_type: bool, where: str
) -> tuple[int, object]:
    """(type, data) to write for ``spec`` over a value of type ``existing`` (None: absent).

    Untyped data takes the existing type (REG_SZ for a new value); an explicit type that
    differs from the existing one is refused (exit 3) unless ``change_type``.
    """
    if spec.type is None:
        vtype = existing if existing is not None else int(RegType.SZ)
    else:
        vtype = spec.type
        if existing is not None and existing != vtype and not change_type:
            raise SafetyRefusal(
                f"{where} is {type_name(existing)}; {quoted(spec.words)} would make it "
                f"{type_name(vtype)} (add --change-type to change its type; nothing written)"
            )
    try:
        return vtype, spec_data(spec, vtype)
    except InputError as exc:
        raise InputError(f"{where} ({type_name(vtype)}): {exc}") from None

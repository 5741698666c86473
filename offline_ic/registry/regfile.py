"""``.reg`` files (regedit's export/import format): parse into operations, export a key.

Why our own: ``reg merge`` must apply a whole file in one transaction and reject a bad file
before anything is opened, naming the line and column; ``reg export`` must write what
regedit and ``hivexregedit --merge`` both read. Pure functions, no I/O.

Grammar accepted (regedit's, plus the value words of ``hive set``): a header line
``Windows Registry Editor Version 5.00`` (or ``REGEDIT4``); ``;`` comments; ``[KEY]``
(create, then set what follows) and ``[-KEY]`` (delete with its subkeys); ``"name"=DATA``
and ``@=DATA`` (default value); ``"name"=-`` (delete). DATA is ``"string"`` (``\\\\`` and
``\\"`` escapes), ``dword:HEX``, ``qword:HEX``, ``hex:BYTES``, ``hex(N):BYTES``,
``expand:"text"``, ``multi:"a","b"``; a line ending in ``\\`` continues on the next.
The file may be UTF-16LE with a BOM (what regedit writes), UTF-8 (with or without a BOM).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from offline_ic.errors import InputError
from offline_ic.escaping import reg_key_name, reg_value_name
from offline_ic.registry.hive import Hive, Key, RegType, Value, decode_data
from offline_ic.registry.regtext import parse_reg_value

HEADER_5 = "Windows Registry Editor Version 5.00"
HEADER_4 = "REGEDIT4"
# a value bigger than a big-data record can describe (65,535 segments of 16,344 bytes)
MAX_VALUE_BYTES = 65535 * 16344
# types whose data is shown decoded (str, list, int); any other type's data stays bytes
DECODED_TYPES = (RegType.SZ, RegType.EXPAND_SZ, RegType.MULTI_SZ, RegType.DWORD, RegType.QWORD)


@dataclass(frozen=True)
class RegOp:
    """One operation of a .reg file, in file order.

    ``kind``: "key" (create KEY if missing), "delete_key" (KEY and all below it),
    "set" (value ``name`` of KEY to ``type``/``raw``), "delete_value".
    ``key`` is the path as written in the file (with its root, e.g. ``HKEY_LOCAL_MACHINE\\...``).
    """

    kind: str
    key: str
    name: str = ""
    type: int | None = None
    raw: bytes = b""
    line: int = 0

    @property
    def data(self) -> object:
        """The value's data decoded where it decodes back to exactly ``raw``, else the bytes."""
        return decoded(self.type or 0, self.raw)


def decoded(vtype: int, raw: bytes) -> object:
    """``decode_data`` when the decoded form encodes back to the same bytes, else ``raw``."""
    from offline_ic.registry.editor import encode_value

    if vtype not in DECODED_TYPES:
        return raw
    data = decode_data(vtype, raw)
    if isinstance(data, bytes):
        return data
    try:
        return data if encode_value(vtype, data) == raw else raw
    except InputError:
        return raw


class RegSyntaxError(InputError):
    """A .reg file that does not parse: the message names the line and column (exit 2)."""


def decode_reg_bytes(data: bytes, source: str = "<reg>") -> str:
    """The text of a .reg file: UTF-16LE/BE with a BOM, UTF-8 with or without a BOM."""
    if data.startswith(b"\xff\xfe"):
        codec, body = "utf-16-le", data[2:]
    elif data.startswith(b"\xfe\xff"):
        codec, body = "utf-16-be", data[2:]
    elif data.startswith(b"\xef\xbb\xbf"):
        codec, body = "utf-8", data[3:]
    elif len(data) >= 2 and data[1] == 0 and data[0] != 0:
        codec, body = "utf-16-le", data  # UTF-16LE without a BOM
    else:
        codec, body = "utf-8", data
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n" if codec == "utf-8" else "\n".encode(codec)) + 1
        raise RegSyntaxError(
            f"{source}: line {line}: not {codec.upper()} text (byte {exc.start}); "
            "save the file as UTF-16LE (regedit) or UTF-8"
        ) from None


# --- parsing ------------------------------------------------------------------------------


@dataclass
class _Logical:
    """One logical line (continuations joined) and where its pieces came from."""

    text: str
    # (index in ``text`` where a physical line's piece starts, its line, its column), 1-based
    pieces: list[tuple[int, int, int]]
    line: int

    def at(self, index: int) -> tuple[int, int]:
        """(line, column) of character ``index`` of ``text``, for error messages."""
        if not self.pieces:
            return self.line, 1
        piece = bisect.bisect_right(self.pieces, index, key=lambda p: p[0]) - 1
        start, line, col = self.pieces[max(piece, 0)]
        return line, col + index - start


def _logical_lines(text: str) -> Iterator[_Logical]:
    """Physical lines joined at a trailing backslash (hex data continues so)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        start = i
        buf: list[str] = []
        pieces: list[tuple[int, int, int]] = []
        length = 0
        first = True
        while True:
            raw = lines[i]
            lead = 0 if first else len(raw) - len(raw.lstrip(" \t"))
            body = raw[lead:]
            cont = _continues(body)
            if cont:
                body = body.rstrip(" \t")[:-1]
            buf.append(body)
            pieces.append((length, i + 1, lead + 1))
            length += len(body)
            i += 1
            first = False
            if not cont or i >= len(lines):
                break
        yield _Logical("".join(buf), pieces, start + 1)


def _continues(body: str) -> bool:
    """A value line continues when it ends in a backslash outside a quoted string."""
    stripped = body.rstrip(" \t")
    if not stripped.endswith("\\") or stripped.lstrip().startswith(("[", ";")):
        return False
    if '"' not in stripped:  # hex data: nothing quoted
        return True
    quoted = False
    i = 0
    while i < len(stripped) - 1:
        c = stripped[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        i += 1
    return not quoted and i == len(stripped) - 1


def parse_reg_file(text: str, source: str = "<reg>") -> list[RegOp]:
    """Every operation of a .reg file in order; any mistake is a RegSyntaxError with the
    line and column."""
    ops: list[RegOp] = []
    key: str | None = None
    saw_header = False
    for logical in _logical_lines(text.lstrip("\ufeff")):
        stripped = logical.text.strip()
        if not stripped or stripped.startswith(";"):
            continue
        indent = len(logical.text) - len(logical.text.lstrip())
        if not saw_header:
            if stripped not in (HEADER_5, HEADER_4):
                _fail(source, logical, indent, f"expected the header line '{HEADER_5}'")
            saw_header = True
            continue
        if stripped.startswith("["):
            key, op = _parse_key_line(logical, indent, source)
            ops.append(op)
            continue
        if key is None:
            _fail(source, logical, indent, "a value before the first [KEY] line")
        ops.append(_parse_value_line(logical, indent, key, source))
    if not saw_header:
        raise RegSyntaxError(f"{source}: line 1, column 1: empty file (no '{HEADER_5}' header)")
    return ops


def _fail(source: str, logical: _Logical, index: int, message: str) -> NoReturn:
    line, col = logical.at(index)
    raise RegSyntaxError(f"{source}: line {line}, column {col}: {message}")


def _parse_key_line(logical: _Logical, indent: int, source: str) -> tuple[str, RegOp]:
    text = logical.text.rstrip()
    if not text.endswith("]"):
        _fail(source, logical, len(text), "a key line must end with ']'")
    body = text[indent + 1 : -1]
    delete = body.startswith("-")
    path = body[1:] if delete else body
    path = path.strip("\\")
    if not path:
        _fail(source, logical, indent + 1, "empty key path")
    if "\\\\" in path:
        _fail(source, logical, indent + 1 + text[indent + 1 :].find("\\\\"), "empty key name")
    op = RegOp("delete_key" if delete else "key", path, line=logical.line)
    return path, op


def _parse_name(logical: _Logical, indent: int, source: str) -> tuple[str, int]:
    """The value name and the index just after it (at '=')."""
    text = logical.text
    if text[indent] == "@":
        return "", indent + 1
    if text[indent] != '"':
        _fail(source, logical, indent, 'expected "name"=… or @=… (or [KEY])')
    out: list[str] = []
    i = indent + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    _fail(source, logical, indent, "unterminated value name (missing closing quote)")


def _parse_value_line(logical: _Logical, indent: int, key: str, source: str) -> RegOp:
    text = logical.text
    name, i = _parse_name(logical, indent, source)
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text) or text[i] != "=":
        _fail(source, logical, i, "expected '=' after the value name")
    i += 1
    while i < len(text) and text[i] in " \t":
        i += 1
    rhs = text[i:].rstrip()
    if rhs == "-":
        return RegOp("delete_value", key, name, line=logical.line)
    if not rhs:
        _fail(source, logical, i, "missing value data after '='")
    vtype, raw = _parse_data(logical, i, rhs, source)
    if len(raw) > MAX_VALUE_BYTES:
        _fail(source, logical, i, f"value too large for the registry ({len(raw)} bytes)")
    return RegOp("set", key, name, vtype, raw, logical.line)


def _parse_data(logical: _Logical, start: int, rhs: str, source: str) -> tuple[int, bytes]:
    """(type, raw bytes) of the right-hand side; errors point at the offending character."""
    from offline_ic.registry.editor import encode_value

    if rhs.startswith('"'):
        end = _string_end(rhs)
        if end is None:
            _fail(source, logical, start, "unterminated string (missing closing quote)")
        if rhs[end + 1 :].strip():
            _fail(source, logical, start + end + 1, "unexpected text after the string")
        text = _unescape(rhs[1:end])
        return RegType.SZ, _encode(logical, start, source, RegType.SZ, text)
    low = rhs.lower()
    if low.startswith("hex"):
        return _parse_hex(logical, start, rhs, source)
    try:
        vtype, data = parse_reg_value(rhs)
    except InputError as exc:
        _fail(source, logical, start, str(exc))
    if vtype == RegType.SZ:  # parse_reg_value takes any text as a string: not in a file
        _fail(source, logical, start, f"unknown value data {rhs[:30]!r} (a string is quoted)")
    try:
        return vtype, encode_value(vtype, data)
    except InputError as exc:
        _fail(source, logical, start, str(exc))


def _encode(logical: _Logical, start: int, source: str, vtype: int, data: object) -> bytes:
    from offline_ic.registry.editor import encode_value

    try:
        return encode_value(vtype, data)
    except InputError as exc:
        _fail(source, logical, start, str(exc))


def _string_end(rhs: str) -> int | None:
    i = 1
    while i < len(rhs):
        if rhs[i] == "\\":
            i += 2
            continue
        if rhs[i] == '"':
            return i
        i += 1
    return None


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
            continue
        out.append(body[i])
        i += 1
    return "".join(out)


_SPACE = re.compile(r"\s")


def _plain_hex(body: str) -> bytes | None:
    """The bytes of ``ab,cd,ef`` (two digits a byte, commas, no blanks inside; a trailing
    comma allowed), found with slices and ``bytes.fromhex`` in C; None for anything else.
    A regular expression with a repeated group kept a backtracking frame per byte: one
    8 MiB hex line took 2 GB."""
    core = body.strip()
    if core.endswith(","):
        core = core[:-1]
    if len(core) % 3 != 2 or _SPACE.search(core):
        return None
    commas = core[2::3]
    if commas.count(",") != len(commas):
        return None
    try:
        return bytes.fromhex(core.replace(",", ""))
    except ValueError:  # not hex digits: the byte by byte path says where
        return None


def _parse_hex(logical: _Logical, start: int, rhs: str, source: str) -> tuple[int, bytes]:
    colon = rhs.find(":")
    head = rhs[:colon] if colon >= 0 else rhs
    if colon < 0:
        _fail(source, logical, start + len(rhs), "expected ':' after hex")
    if head.lower() == "hex":
        vtype: int = RegType.BINARY
    elif head[3:4] == "(" and head.endswith(")") and 1 <= len(head) - 5 <= 8:
        try:
            vtype = int(head[4:-1], 16)
        except ValueError:
            _fail(source, logical, start + 4, f"bad type number {head[4:-1]!r} in {head}")
    else:
        _fail(source, logical, start, f"bad hex type {head!r} (hex: or hex(N):)")
    out = bytearray()
    pos = start + colon + 1
    body = rhs[colon + 1 :]
    if not body.strip():
        return vtype, b""
    plain = _plain_hex(body)  # the usual two-digit bytes: no per-byte work
    if plain is not None:
        return vtype, plain
    offset = 0
    while offset <= len(body):  # one byte at a time, no list of pieces (the line may be long)
        comma = body.find(",", offset)
        part = body[offset : comma if comma >= 0 else len(body)]
        word = part.strip()
        col = pos + offset + (len(part) - len(part.lstrip()))
        offset += len(part) + 1
        if not word and offset >= len(body) + 1:  # a trailing comma
            break
        if len(word) not in (1, 2) or any(c not in "0123456789abcdefABCDEF" for c in word):
            _fail(source, logical, col, f"bad hex byte {word!r} (two hex digits expected)")
        out.append(int(word, 16))
    return vtype, bytes(out)


# --- export -------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_value_line(value: Value) -> str:
    """One value as regedit writes it; anything that a quoted string or a dword would not
    carry byte for byte (no terminating NUL, newlines, non-ASCII) is written as hex(N)."""
    name = "@" if value.name == "" else _quote(value.name)
    return _wrap(f"{name}=", format_data(value.type, value.raw))


def format_data(vtype: int, raw: bytes) -> str:
    data = decode_data(vtype, raw)
    if vtype == RegType.DWORD and isinstance(data, int) and len(raw) == 4:
        return f"dword:{data:08x}"
    exact_sz = (
        vtype == RegType.SZ
        and isinstance(data, str)
        and raw == (data + "\x00").encode("utf-16-le")
        and data.isascii()
        and data.isprintable()
    )
    if exact_sz:
        return _quote(str(data))
    hexed = ",".join(f"{b:02x}" for b in raw)
    return f"hex:{hexed}" if vtype == RegType.BINARY else f"hex({vtype:x}):{hexed}"


def _wrap(prefix: str, data: str, width: int = 80) -> str:
    """Hex data folded as regedit folds it: lines under ``width``, ending ``,\\``."""
    if not data.startswith("hex") or len(prefix) + len(data) <= width:
        return prefix + data
    lines: list[str] = []
    head, _, body = data.partition(":")
    cur = prefix + head + ":"
    words = body.split(",")
    last = len(words) - 1
    for i, byte in enumerate(words):
        piece = byte + ("," if i < last else "")
        if len(cur) + len(piece) > width - 1:
            lines.append(cur + "\\")
            cur = "  "
        cur += piece
    lines.append(cur)
    return "\n".join(lines)


def export_key(hive: Hive, key: Key, root: str, *, recursive: bool = True) -> str:
    """``key`` (and, with ``recursive``, every key below it) as a .reg document.

    ``root`` is the registry path of the hive's root (``HKEY_LOCAL_MACHINE\\SYSTEM``); keys are
    written as ``[root\\path]``. Lines end in CRLF, as regedit writes them. A key or value
    name that a .reg line cannot carry (a line break, NUL, lone surrogate; a backslash in a
    key name) is an ``InputError`` naming it (``escaping.reg_key_name``): the export is
    all or nothing, never a file with a section the guest chose.
    """
    out = [HEADER_5, ""]
    keys = hive.walk(key) if recursive else iter([key])
    for k in keys:
        path = root + ("\\" + k.path if k.path else "")
        if k is not key or k.path:
            reg_key_name(k.name, path[: len(path) - len(k.name) - 1])
        out.append(f"[{path}]")
        for v in k.values():
            reg_value_name(v.name, path)
            out.append(format_value_line(v))
        out.append("")
    return "\r\n".join("\r\n".join(line.split("\n")) for line in out) + "\r\n"


__all__ = [
    "MAX_VALUE_BYTES",
    "RegOp",
    "RegSyntaxError",
    "decode_reg_bytes",
    "decoded",
    "export_key",
    "format_data",
    "format_value_line",
    "parse_reg_file",
]

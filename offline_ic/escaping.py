"""One escaping function per output kind: guest text printed anywhere passes through here.

Why: key names, values, host names and file names come from untrusted images and can
hold newlines, ``]``, quotes, control characters, ANSI escapes and lone UTF-16
surrogates. Each output kind has one function that makes such text inert for that kind,
so no guest value can add a line, a section, an element or a terminal command:

* ``terminal`` / ``terminal_doc``: text for people (stdout, stderr, errors, warnings);
* ``json_text``: JSON and NDJSON (valid UTF-8, one line per NDJSON document);
* ``reg_key_name`` / ``reg_value_name``: names in a ``.reg`` file (refused, not escaped);
* ``html_text``: HTML text and attribute values;
* ``xml_text``: JUnit XML text and attribute values (only XML 1.0 characters).

Nothing here imports the rest of the tool except ``errors``.
"""

from __future__ import annotations

import json
import re
from html import escape as _html_escape
from typing import Any

from offline_ic.errors import InputError

# C0 and C1 controls, DEL, Arabic letter mark and the bidi marks/embeddings/overrides/
# isolates (they reorder what follows them on a line), the Unicode line and paragraph
# separators, lone surrogates and the two noncharacters XML 1.0 cannot hold.
_UNSAFE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff"
# A run of backslashes before an ``x`` or ``u`` is doubled, so it cannot read as one of our
# escapes; every other backslash (``C:\\Windows``, ``\\\\server``) is shown as it is.
_TERMINAL = re.compile(f"[{_UNSAFE}]|\\\\+(?=[xu])")
_TERMINAL_KEEP_BACKSLASH = re.compile(f"[{_UNSAFE}]")
# what json.dumps(ensure_ascii=False) leaves raw although line splitters or terminals act on it
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# what a .reg name line cannot carry byte for byte (our parser and hivexregedit split lines
# on these, and neither UTF-8 nor UTF-16 can hold a lone surrogate)
_REG_UNSAFE = re.compile("[\x00\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char.startswith("\\"):
        return char * 2
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal(text: str, *, backslashes: bool = True) -> str:
    """``text`` safe to print on a terminal, on one line: control characters (newlines
    included), C1, bidi controls, U+2028/2029, lone surrogates shown as ``\\x0a``, ``\\x1b``,
    ``\\u2028``, ``\\udc80``; backslashes before ``x``/``u`` doubled, so every escape is
    unambiguous and Windows paths stay readable. ``backslashes=False`` for text whose
    backslashes are already escaped by its own syntax (a ``.reg`` line's quoted names)."""
    pattern = _TERMINAL if backslashes else _TERMINAL_KEEP_BACKSLASH
    return pattern.sub(_escape_char, text)


def terminal_doc(doc: Any) -> Any:
    """A copy of a document (dicts, lists, strings, numbers) with every string, keys
    included, passed through ``terminal``: what a text renderer prints from."""
    if isinstance(doc, str):
        return terminal(doc)
    if isinstance(doc, dict):
        return {terminal_doc(k): terminal_doc(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [terminal_doc(v) for v in doc]
    return doc


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_text(doc: Any, *, indent: int | None = None) -> str:
    """``doc`` as JSON text that encodes to valid UTF-8: non-ASCII letters stay readable;
    lone surrogates, DEL, C1 controls, U+2028/2029 and the bidi controls become ``\\uXXXX``
    escapes (a raw JSON document shown in a terminal cannot be reordered by the guest; they can
    only occur inside strings, so the replacement keeps the document's meaning) and,
    without ``indent``, the text is one line whatever the data holds."""
    text = json.dumps(doc, indent=indent, ensure_ascii=False, default=str)
    return _JSON_UNSAFE.sub(_json_escape, text)


def _refuse(what: str, name: str, path: str, problem: str) -> InputError:
    # raw names: the message is escaped once, where it is printed (cli, JSON)
    return InputError(
        f"{what} '{name}' under '{path}' {problem}, which a .reg file cannot express; "
        "not exported (`reg get --json` shows it exactly)"
    )


def _reg_name(name: str, what: str, path: str) -> str:
    bad = _REG_UNSAFE.search(name)
    if bad is None:
        return name
    raise _refuse(what, name, path, f"holds U+{ord(bad.group()):04X}")


def reg_key_name(name: str, path: str) -> str:
    """A key name for a ``[...]`` line of a ``.reg`` file, or ``InputError`` (exit 2) naming
    the key. A ``.reg`` key line has no escapes: a line break would start a new line (a
    section the guest chose), a backslash a new key level, and a lone surrogate has no
    UTF-8/UTF-16 form. A ``]`` needs nothing: hivexregedit and our parser both end the path
    at the line's last ``]`` (tests/registry/test_hostile_names.py)."""
    _reg_name(name, "key name", path)
    if "\\" in name or name == "":
        raise _refuse("key name", name, path, "is empty or holds a backslash")
    return name


def reg_value_name(name: str, path: str) -> str:
    """A value name for a ``"name"=`` line of a ``.reg`` file (quotes and backslashes are
    escaped by the caller), or ``InputError`` naming the key when the name holds a line
    break, a NUL or a lone surrogate."""
    return _reg_name(name, "value name", path)


def html_text(value: Any) -> str:
    """``value`` (None as empty) as HTML text or a quoted attribute value: ``terminal``'s
    escapes (a responder sees ``\\x1b``, the file stays valid UTF-8), then ``<>&"'``."""
    return _html_escape(terminal("" if value is None else str(value)), quote=True)


def xml_text(value: Any) -> str:
    """``value`` as text that XML 1.0 can hold, for ElementTree to quote: ``terminal``'s
    escapes remove every character XML forbids (C0 controls, lone surrogates, U+FFFE/FFFF)
    and those a CI log would act on (ESC, C1)."""
    return terminal("" if value is None else str(value))


__all__ = [
    "html_text",
    "json_text",
    "reg_key_name",
    "reg_value_name",
    "terminal",
    "terminal_doc",
    "xml_text",
]

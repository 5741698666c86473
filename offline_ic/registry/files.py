"""Bare hive files on the host: find logs, edit in place page by page, keep an undo file.

Why: ``offline-ic hive set`` must change a hive file in place (the same code later writes a
hive inside an image, where a temp-copy-and-rename is impossible), so we write only the
dirty pages, after saving their original bytes to ``HIVE.offline-ic-undo`` (fsynced). A
crash leaves the undo file behind; ``hive recover`` rolls it back.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from offline_ic.errors import InputError, NotFoundError, SafetyRefusal
from offline_ic.registry import structs as S
from offline_ic.registry.editor import CommitResult, HiveEditor
from offline_ic.registry.hive import Hive, base_block_checksum
from offline_ic.registry.recovery import RecoveryResult, recover_bytes

UNDO_SUFFIX = ".offline-ic-undo"
UNDO_MAGIC = b"OFFLINE-IC-UNDO1"
PAGE = 4096


def find_logs(path: Path) -> tuple[Path | None, Path | None]:
    """HIVE.LOG1 and HIVE.LOG2 beside a hive, matched case-insensitively."""
    found: dict[str, Path] = {}
    want = {path.name.lower() + ".log1": "1", path.name.lower() + ".log2": "2"}
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            tag = want.get(entry.name.lower())
            if tag and entry.is_file():
                found[tag] = entry
    return found.get("1"), found.get("2")


def undo_path(path: Path) -> Path:
    return path.with_name(path.name + UNDO_SUFFIX)


def read_hive_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a hive file") from None


@dataclass
class OpenedHive:
    """A hive file read for use: the bytes to use and how they were obtained."""

    path: Path
    data: bytes
    state: str  # "clean", "recovered" or "dirty" (dirty = primary as found, not recovered)
    sequence1: int
    sequence2: int
    recovery: RecoveryResult | None = None
    note: str = ""


def load_hive(path: Path, *, require_recovery: bool) -> OpenedHive:
    """Read a hive file; a dirty one is recovered in memory from the logs beside it.

    With ``require_recovery`` (writes) a dirty hive that cannot be recovered raises
    ``SafetyRefusal``; otherwise (reads) the primary is used as found and the note says so.
    """
    data = read_hive_file(path)
    probe = Hive(_buffer(data), str(path), allow_bad_checksum=True)
    seqs = (probe.sequence1, probe.sequence2)
    if not probe.is_dirty and probe.checksum_ok:
        return OpenedHive(path, data, "clean", *seqs)
    log1, log2 = find_logs(path)
    try:
        if log1 is None and log2 is None:
            raise SafetyRefusal(
                f"{path}: hive is dirty (sequence {seqs[0]} != {seqs[1]}) and no "
                f"{path.name}.LOG1/.LOG2 were found beside it"
            )
        res = recover_bytes(
            data,
            log1.read_bytes() if log1 else None,
            log2.read_bytes() if log2 else None,
            name=str(path),
        )
    except SafetyRefusal as exc:
        if require_recovery:
            raise
        Hive(_buffer(data), str(path))  # a bad checksum is still an error for reads
        return OpenedHive(path, data, "dirty", *seqs, note=str(exc))
    used = "+".join(res.logs_used)
    note = f"hive is dirty (sequence {seqs[0]} != {seqs[1]}); recovered in memory from {used}"
    return OpenedHive(path, bytes(res.data), "recovered", *seqs, recovery=res, note=note)


def _buffer(data: bytes):
    from offline_ic.registry.source import BufferSource

    return BufferSource(data)


# --- undo file ---------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_undo(path: Path, old_length: int, pages: list[tuple[int, bytes]]) -> Path:
    """Save the original bytes of the pages about to be overwritten (fsynced)."""
    body = [UNDO_MAGIC, struct.pack("<QI", old_length, len(pages))]
    for off, data in pages:
        body.append(struct.pack("<QI", off, len(data)))
        body.append(data)
    blob = b"".join(body)
    blob += struct.pack("<I", zlib.crc32(blob))
    upath = undo_path(path)
    with open(upath, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(upath)
    return upath


def rollback_undo(path: Path) -> bool:
    """Put back the pages saved in HIVE.offline-ic-undo; False when the undo file is
    incomplete (the write never started, the hive is untouched) and it was just removed."""
    upath = undo_path(path)
    blob = upath.read_bytes()
    ok = (
        len(blob) >= len(UNDO_MAGIC) + 16
        and blob.startswith(UNDO_MAGIC)
        and struct.unpack_from("<I", blob, len(blob) - 4)[0] == zlib.crc32(blob[:-4])
    )
    if not ok:
        upath.unlink()
        _fsync_dir(upath)
        return False
    pos = len(UNDO_MAGIC)
    old_length, count = struct.unpack_from("<QI", blob, pos)
    pos += 12
    with open(path, "r+b") as f:
        for _ in range(count):
            off, n = struct.unpack_from("<QI", blob, pos)
            pos += 12
            f.seek(off)
            f.write(blob[pos : pos + n])
            pos += n
        f.truncate(old_length)
        f.flush()
        os.fsync(f.fileno())
    upath.unlink()
    _fsync_dir(upath)
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on the hive while we write it (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SafetyRefusal(f"{path}: another process is writing this hive") from None
        yield
    finally:
        os.close(fd)


@dataclass
class WriteResult:
    """What a write did: pages written, bytes, file lengths, and whether logs were replayed."""

    pages: list[int]
    bytes_written: int
    old_length: int
    new_length: int
    recovered: bool


def _write_sequence(
    path: Path, original: bytes, new: bytes | bytearray, pages: list[tuple[int, bytes]]
) -> None:
    """Base block marked dirty (sequence 1 only), data pages, fsync, final base block, fsync."""
    base = dict(pages).get(0)
    with open(path, "r+b") as f:
        if base is not None:
            first = bytearray(original[: S.BASE_BLOCK_SIZE])
            seq1 = struct.unpack_from("<I", base, S.BASE_SEQ1_OFF)[0]
            struct.pack_into("<I", first, S.BASE_SEQ1_OFF, seq1)
            struct.pack_into("<I", first, S.BASE_CHECKSUM_OFF, base_block_checksum(bytes(first)))
            f.seek(0)
            f.write(first)
            f.flush()
            os.fsync(f.fileno())
        for off, data in pages:
            if off == 0:
                continue
            f.seek(off)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
        if base is not None:
            f.seek(0)
            f.write(base)
        if len(new) < len(original):
            f.truncate(len(new))
        f.flush()
        os.fsync(f.fileno())


def write_pages_in_place(
    path: Path, original: bytes, new: bytes | bytearray, pages: list[tuple[int, bytes]]
) -> WriteResult:
    """Write ``pages`` (offset, bytes) into ``path``, crash-safe through the undo file.

    Order: undo file (fsync); base block marked dirty (sequence 1 raised only); data pages;
    fsync; final base block; fsync; undo file removed.
    """
    pages = sorted(pages)
    old_pages = [(off, original[off : off + len(data)]) for off, data in pages]
    try:
        write_undo(path, len(original), old_pages)
    except OSError:
        with contextlib.suppress(OSError):
            undo_path(path).unlink()  # nothing of the hive was touched yet
        raise
    try:
        _write_sequence(path, original, new, pages)
    except OSError as exc:
        # put the original pages back now (ENOSPC, I/O error); the undo file stays if that
        # fails too, and 'hive recover' finishes the job later
        try:
            rollback_undo(path)
        except OSError:
            raise SafetyRefusal(
                f"{path}: write failed ({exc.strerror or exc}) and the rollback failed too; "
                f"run 'offline-ic hive recover {path}' to restore it from "
                f"{undo_path(path).name}"
            ) from exc
        raise
    undo_path(path).unlink()
    _fsync_dir(path)
    return WriteResult(
        [off // PAGE for off, _d in pages],
        sum(len(d) for _o, d in pages),
        len(original),
        len(new),
        False,
    )


def diff_pages(old: bytes, new: bytes | bytearray) -> list[tuple[int, bytes]]:
    """Every 4 KiB page of ``new`` that differs from ``old`` (or lies past its end)."""
    out = []
    for off in range(0, len(new), PAGE):
        chunk = bytes(new[off : off + PAGE])
        if chunk != old[off : off + PAGE]:
            out.append((off, chunk))
    return out


def _open_editor(path: Path) -> tuple[bytes, HiveEditor]:
    """The file's bytes and an editor over them; a dirty hive is recovered from the logs
    beside it first (SafetyRefusal when that cannot be done)."""
    original = read_hive_file(path)
    log1, log2 = find_logs(path)
    editor = HiveEditor.from_primary(
        original,
        log1.read_bytes() if log1 else None,
        log2.read_bytes() if log2 else None,
        name=str(path),
    )
    return original, editor


def edit_hive_file(
    path: Path, edit: Callable[[HiveEditor], None], *, allow_grow: bool = True
) -> tuple[WriteResult, CommitResult]:
    """Apply ``edit`` to a bare hive file in place, recovering a dirty hive first."""
    path = Path(path)
    if undo_path(path).exists():
        raise SafetyRefusal(
            f"{path}: an earlier write was interrupted ({undo_path(path).name} exists); "
            f"run 'offline-ic hive recover {path}' first"
        )
    with _locked(path):
        original, editor = _open_editor(path)
        edit(editor)
        commit = editor.commit()
        if not commit.pages:
            return WriteResult([], 0, len(original), len(original), False), commit
        if not allow_grow and len(editor.buf) > len(original):
            raise SafetyRefusal(f"{path}: the edit needs the file to grow; not allowed here")
        result = write_pages_in_place(path, original, editor.buf, commit.pages)
        result.recovered = editor.recovered
        return result, commit


def recover_hive_file(path: Path, output: Path | None = None) -> tuple[str, WriteResult | None]:
    """Roll back an interrupted write, or replay the logs into the hive (in place or to
    ``output``). Returns a one-line summary and what was written."""
    path = Path(path)
    if output is None and undo_path(path).exists():
        rolled = rollback_undo(path)
        if rolled:
            return f"{path}: rolled back an interrupted write from {undo_path(path).name}", None
        return f"{path}: removed an incomplete undo file (the hive was not touched)", None
    with _locked(path) if output is None else contextlib.nullcontext():
        original, editor = _open_editor(path)
        if not editor.recovered:
            if output is not None:
                _write_new_file(Path(output), original)
                return f"{path}: hive is clean, copied -> {output}", None
            return f"{path}: hive is clean, nothing to recover", None
        # like Windows writing the recovered hive: sequence numbers + 1, timestamp unchanged
        commit = editor.commit(touch_timestamp=False)
        applied = commit.pages
        what = f"recovered from {'+'.join(find_used(editor))}"
        if output is not None:
            _write_new_file(Path(output), editor.buf)
            return f"{path}: {what} -> {output}", None
        result = write_pages_in_place(path, original, editor.buf, applied)
        result.recovered = True
        return f"{path}: {what}; wrote {len(applied)} pages in place", result


def find_used(editor: HiveEditor) -> list[str]:
    return editor.recovery_logs or ["logs"]


def _write_new_file(path: Path, data: bytes | bytearray) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

"""Bare hive files on the host: find the logs, read, edit in place, recover.

Why: ``offline-ic hive set`` must change a hive file in place (a hive inside an image cannot
be replaced by a temp-copy-and-rename either), writing only the pages ``HiveEditor.commit()``
says differ. A bare hive file is just a file, so it is written through the same raw-file
transaction as a raw disk image (``offline_ic.image.raw.RawImage``): its exclusive lock, its
undo journal ``HIVE.offline-ic-journal`` (CRC-32C, fsynced before the first byte changes)
and its rollback. This module keeps no write logic of its own. The journal makes a write
all-or-nothing, so the old ordering (base block marked dirty first, data, final base block)
is not needed for crash safety: after a crash the next writable open, or ``hive recover``,
puts the original bytes and length back. Reads see a hive with a pending journal as it
will be after that rollback (``journal.open_view``), as raw image reads do.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from offline_ic.errors import InputError, SafetyRefusal
from offline_ic.image import check_writable
from offline_ic.image.fileio import open_image_file
from offline_ic.image.journal import open_view, pending_path
from offline_ic.image.raw import RawImage
from offline_ic.image.settle import settle, settled_error
from offline_ic.inputs import open_readonly
from offline_ic.registry.editor import CommitResult, HiveEditor
from offline_ic.registry.hive import Hive
from offline_ic.registry.recovery import RecoveryResult, recover_bytes
from offline_ic.registry.source import BufferSource

if TYPE_CHECKING:
    from offline_ic.registry.crosscheck import Expected

PAGE = 4096
# who checks a bare hive write (``WriteResult.verified_by``): the file read back with plain
# reads, our structural check of what the write touched, and regipy's parsers
READ_BACK_BY = ["raw file", "regipy"]


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


def pending_journal(path: Path) -> Path | None:
    """The undo journal an interrupted write left for the hive (through any of its names),
    if there is one."""
    jp = pending_path(str(path))
    return None if jp is None else Path(jp)


def read_hive_file(path: Path) -> bytes:
    """The hive file's bytes; with a pending journal, as they will be after its rollback."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a hive file")
    image = RawImage(str(path))
    try:
        return image.read(0, image.size)
    except IsADirectoryError:  # pragma: no cover - raced with the check above
        raise InputError(f"{path}: is a directory, not a hive file") from None
    finally:
        image.close()


def _mapped_hive_file(path: Path) -> memoryview | None:
    """A hive file to read, memory-mapped: a lookup reads only the pages it touches, as
    hives inside images are read (``hive get`` read a 512 MiB hive whole). None when a
    pending journal must be rolled back in the view first, or the file is not a regular,
    non-empty file (``read_hive_file`` says what it is)."""
    import mmap

    from offline_ic.inputs import open_fd

    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return None  # never opened: a FIFO would block (read_hive_file names it)
        if pending_journal(path) is not None:
            return None
        with os.fdopen(open_fd(str(path)), "rb") as fh:  # O_NOATIME: evidence keeps its atime
            return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
    except (OSError, InputError):
        return None


@dataclass
class OpenedHive:
    """A hive file read for use: the bytes to use and how they were obtained."""

    path: Path
    data: bytes | memoryview  # memoryview: the file mapped for reading
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
    mapped = None if require_recovery else _mapped_hive_file(Path(path))
    data = read_hive_file(path) if mapped is None else mapped
    probe = Hive(BufferSource(data), str(path), allow_bad_checksum=True)
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
            bytes(data),
            _read_log(log1),
            _read_log(log2),
            name=str(path),
        )
    except SafetyRefusal as exc:
        if require_recovery:
            raise
        Hive(BufferSource(data), str(path))  # a bad checksum is still an error for reads
        return OpenedHive(path, data, "dirty", *seqs, note=str(exc))
    used = "+".join(res.logs_used)
    note = f"hive is dirty (sequence {seqs[0]} != {seqs[1]}); recovered in memory from {used}"
    return OpenedHive(path, bytes(res.data), "recovered", *seqs, recovery=res, note=note)


# --- writes (through the image layer's raw-file transaction) ---------------------------


@dataclass
class WriteResult:
    """What a write did: pages written, bytes, file lengths, and whether logs were replayed."""

    pages: list[int]
    bytes_written: int
    old_length: int
    new_length: int
    recovered: bool
    verified_by: list[str] = field(default_factory=list)  # empty: nothing was read back
    # a dry run: ``pages``/``bytes_written`` are what the real run would write, and nothing
    # was written (``recovered``: the logs would be replayed first)
    dry_run: bool = False

    @classmethod
    def of(
        cls, commit: CommitResult, recovered: bool, verified_by: list[str], *, dry_run: bool = False
    ) -> WriteResult:
        """What writing ``commit`` does (or, ``dry_run``, would do)."""
        pages = [off // PAGE for off, _d in commit.pages]
        lengths = (commit.old_file_length, commit.file_length)
        return cls(pages, commit.bytes_written, *lengths, recovered, verified_by, dry_run)


def _refuse_interrupted(path: Path) -> None:
    """A pending journal means our last write was cut short: ``hive recover`` first.

    Checked before the writable open, which would roll the journal back silently.
    """
    jp = pending_journal(path)
    if jp is not None:
        raise SafetyRefusal(
            f"{path}: an earlier write was interrupted ({jp.name} exists); "
            f"run 'offline-ic hive recover {path}' first"
        )


def _open_editor(path: Path, original: bytes) -> HiveEditor:
    """An editor over the file's bytes; a dirty hive is recovered from the logs beside it
    first (SafetyRefusal when that cannot be done)."""
    log1, log2 = find_logs(path)
    return HiveEditor.from_primary(
        original,
        _read_log(log1),
        _read_log(log2),
        name=str(path),
    )


def _read_log(log: Path | None) -> bytes | None:
    """A .LOG1/.LOG2 file's bytes (a FIFO or device is refused, the access time is kept)."""
    if log is None:
        return None
    with open_readonly(str(log), "hive log") as fh:
        return fh.read()


ExpectFn = Callable[[], Iterable["Expected"]]


def _write_commit(
    image: RawImage,
    path: Path,
    commit: CommitResult,
    recovered: bool,
    original: bytes,
    expect: ExpectFn | None = None,
) -> WriteResult:
    """Write exactly the committed pages and the new length, in one journaled transaction;
    with ``expect``, read the file back and check it (``read_back``) while still locked.

    Any failure once the transaction began (a read-back that disagrees too) is settled by
    ``image.settle``: the hive is closed, its original bytes and length put back, and the
    message says what the file then holds (read back: "unchanged").
    """
    try:
        image.write_ranges(commit.pages, new_size=commit.file_length)
        verified_by = read_back(path, commit, expect()) if expect is not None else []
    except (Exception, KeyboardInterrupt) as exc:
        failure = exc
    else:
        return WriteResult.of(commit, recovered, verified_by)
    image.close()  # releases the lock: settle opens the file again
    old = [(off, original[off : off + len(buf)]) for off, buf in commit.pages]
    found = settle(
        str(path),
        None,
        old,
        commit.pages,
        old_size=len(original),
        new_size=commit.file_length,
    )
    error = settled_error(failure, str(path), found, command="hive recover")
    if error is failure:
        raise failure
    raise error from failure


def read_back(path: Path, commit: CommitResult, expected: Iterable[Expected]) -> list[str]:
    """Check a committed write by reading the file back, not through our hive reader.

    The whole file is read with plain ``os.pread`` (no image layer, no journal view): its
    length and every written page must be what was written; then our structural check of
    the hbins the write touched (``check_touched``, cheap) and regipy's record parsers over
    those bytes in memory must see every expected key and value (``crosscheck``). Any
    disagreement is a ``SafetyRefusal``; returns who checked (``READ_BACK_BY``).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    return check_written(data, str(path), commit, expected)


def check_written(
    data: bytes, label: str, commit: CommitResult, expected: Iterable[Expected]
) -> list[str]:
    """``read_back``'s checks on the hive's bytes ``data``: the file read back after a write,
    or (a dry run) the bytes the write would leave, so that a dry run refuses what the
    real write's read-back would refuse."""
    from offline_ic.registry.check import check_touched
    from offline_ic.registry.crosscheck import regipy_check

    if len(data) != commit.file_length:
        raise SafetyRefusal(
            f"{label}: read back after the write: {len(data)} bytes, not {commit.file_length}"
        )
    for off, buf in commit.pages:
        if data[off : off + len(buf)] != buf:
            raise SafetyRefusal(
                f"{label}: read back after the write: the page at {off} differs from "
                "what was written"
            )
    report = check_touched(data, label, [off for off, _buf in commit.pages])
    if not report.ok:
        raise SafetyRefusal(f"{label}: read back after the write: {report.problems[0]}")
    regipy_check(data, label, expected)
    return list(READ_BACK_BY)


def edit_hive_file(
    path: Path,
    edit: Callable[[HiveEditor], None],
    *,
    allow_grow: bool = True,
    expect: ExpectFn | None = None,
    dry_run: bool = False,
) -> tuple[WriteResult, CommitResult]:
    """Apply ``edit`` to a bare hive file in place, recovering a dirty hive first.

    The file is opened as a writable raw image (exclusive lock); only the pages
    ``commit()`` returns are written, with the new length, through its undo journal.
    ``expect`` (called after ``edit``) gives what regipy must see once the write is read
    back (``read_back``); a read-back that disagrees puts the original file back and
    refuses (exit 3, "unchanged"). ``dry_run`` makes every refusal the write would make,
    the file opened read-only, and returns what would be written (``_planned``).
    """
    path = Path(path)
    _refuse_interrupted(path)
    if dry_run:  # every refusal of the writable open (read-only file, another writer's lock)
        check_writable(str(path))
    with contextlib.closing(RawImage(str(path), writable=not dry_run)) as image:
        original = image.read(0, image.size)
        editor = _open_editor(path, original)
        edit(editor)
        commit = editor.commit()
        if not commit.pages and commit.file_length == len(original):
            return WriteResult([], 0, len(original), len(original), False, dry_run=dry_run), commit
        if not allow_grow and commit.file_length > len(original):
            raise SafetyRefusal(f"{path}: the edit needs the file to grow; not allowed here")
        if dry_run:
            return _planned(path, commit, editor.recovered, original, expect), commit
        result = _write_commit(image, path, commit, editor.recovered, original, expect)
        return result, commit


def _planned(
    path: Path, commit: CommitResult, recovered: bool, original: bytes, expect: ExpectFn | None
) -> WriteResult:
    """A dry run's answer: the pages the write would make, checked as its read-back would
    check them (on the bytes it would leave, in memory); nothing is written."""
    planned = bytearray(original[: commit.file_length])
    planned.extend(bytes(commit.file_length - len(planned)))
    for off, buf in commit.pages:
        planned[off : off + len(buf)] = buf
    if expect is not None:
        try:
            check_written(bytes(planned), str(path), commit, expect())
        except SafetyRefusal as exc:
            raise SafetyRefusal(f"{exc} (checked on the planned write; nothing written)") from exc
    return WriteResult.of(commit, recovered, [], dry_run=True)


def _journal_complete(path: Path) -> bool:
    """Does the pending journal hold a whole transaction (else the hive was never touched)?"""
    io = open_image_file(str(path), False)
    try:
        return open_view(io, str(path)) is not io
    finally:
        io.close()


def _roll_back(path: Path, jp: Path) -> str:
    complete = _journal_complete(path)
    RawImage(str(path), writable=True).close()  # the writable open rolls the journal back
    if complete:
        return f"{path}: rolled back an interrupted write from {jp.name}"
    return f"{path}: removed an incomplete undo journal {jp.name} (the hive was not touched)"


DRY_RUN = "; dry run, nothing written"  # the end of every dry run's line


def _would_roll_back(path: Path, jp: Path) -> str:
    """What ``_roll_back`` would say, found without applying the journal."""
    if _journal_complete(path):
        return f"{path}: would roll back an interrupted write from {jp.name}{DRY_RUN}"
    return f"{path}: would remove an incomplete undo journal {jp.name}{DRY_RUN}"


def recover_hive_file(
    path: Path, output: Path | None = None, *, force: bool = False, dry_run: bool = False
) -> tuple[str, WriteResult | None]:
    """Roll back an interrupted write, or replay the logs into the hive (in place or to
    ``output``, a new file: ``force`` replaces an existing one). Returns a one-line summary
    and what was written. ``dry_run``: the same refusals, the file opened read-only, and
    the summary says what would be done (the ``WriteResult`` what would be written)."""
    path = Path(path)
    if output is not None:
        from offline_ic.outputs import check_output

        check_output(str(output), [str(path)], force=force)  # before anything is read
        original = read_hive_file(path)  # a pending journal: the rolled-back view
        editor = _open_editor(path, original)
        if editor.recovered:
            editor.commit(touch_timestamp=False)
        data = editor.buf if editor.recovered else original
        used = "+".join(find_used(editor))
        done = f"recovered from {used}" if editor.recovered else "hive is clean, copied"
        if dry_run:  # write_new's check, now that the logs have been read too
            check_output(str(output), [str(path)], force=force)
            planned = WriteResult(
                list(range(-(-len(data) // PAGE))),
                len(data),
                len(original),
                len(data),
                editor.recovered,
                dry_run=True,
            )
            would = (
                f"would recover from {used}" if editor.recovered else "hive is clean, would copy"
            )
            return f"{path}: {would} -> {output}{DRY_RUN}", planned
        write_new_file(Path(output), data, path, force)
        return f"{path}: {done} -> {output}", None
    jp = pending_journal(path)
    if jp is not None:
        if dry_run:
            check_writable(str(path))
            return _would_roll_back(path, jp), None
        return _roll_back(path, jp), None
    if dry_run:
        check_writable(str(path))
    with contextlib.closing(RawImage(str(path), writable=not dry_run)) as image:
        original = image.read(0, image.size)
        editor = _open_editor(path, original)
        if not editor.recovered:
            return f"{path}: hive is clean, nothing to recover{DRY_RUN if dry_run else ''}", None
        # like Windows writing the recovered hive: sequence numbers + 1, timestamp unchanged
        commit = editor.commit(touch_timestamp=False)
        if dry_run:
            what = f"would recover from {'+'.join(find_used(editor))}"
            result = WriteResult.of(commit, True, [], dry_run=True)
            pages = f"would write {len(commit.pages)} pages in place"
            return f"{path}: {what}; {pages}{DRY_RUN}", result
        result = _write_commit(image, path, commit, True, original)
    what = f"recovered from {'+'.join(find_used(editor))}"
    return f"{path}: {what}; wrote {len(commit.pages)} pages in place", result


def find_used(editor: HiveEditor) -> list[str]:
    return editor.recovery_logs or ["logs"]


def write_new_file(path: Path, data: bytes | bytearray, source: Path, force: bool) -> None:
    """Write ``data`` as a new file (``outputs.write_new``: never over ``source``, its logs
    or any file read; an existing file only with ``force``; temporary file and rename)."""
    from offline_ic.outputs import write_new

    write_new(str(path), bytes(data), [str(source)], force=force)

"""Errors that the CLI turns into one line on stderr and an exit code.

Every layer raises one of these for anything the user can cause (bad path, corrupt
image, dirty volume); anything else is a bug and is allowed to show a traceback.
"""

import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# What third-party parsers (dissect.*, regipy, decompressors) raise on bytes they cannot make
# sense of; inside ``parsing`` these become our Corrupt...Error. Our own bugs raise the same
# types elsewhere, so the boundary wraps only calls into those parsers, and
# OFFLINE_IC_DEBUG=1 lets the original traceback through.
PARSER_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    ValueError,
    struct.error,
    IndexError,
    KeyError,
    NotImplementedError,
    OverflowError,
    AttributeError,
    TypeError,
    RecursionError,
)


def quoted(text: object) -> str:
    """A registry path, value name or typed word in a message: in single quotes, each
    backslash as the user writes it ('Nope\\Key', not repr's 'Nope\\\\Key'); characters that
    do not print (NUL, controls) are escaped as repr would."""
    body = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return f"'{body}'" if "'" not in body else f'"{body}"'


class OfflineICError(Exception):
    """Base class: a message for the user and the exit code it maps to."""

    exit_code = 2
    kind = "error"  # the machine-readable name of the error class in JSON error records


class InputError(OfflineICError):
    """Usage or input error: missing file, unknown name, unsupported or corrupt input (exit 2)."""

    exit_code = 2
    kind = "input"


class CorruptImageError(InputError):
    """A disk image whose structures are damaged or inconsistent (exit 2)."""

    kind = "corrupt_image"


class CorruptHiveError(InputError):
    """A registry hive whose structures are damaged (exit 2)."""

    kind = "corrupt_hive"


class ParentMismatch(CorruptImageError):
    """A differencing disk's parent was found but is not the disk it was made from (its
    DataWriteGuid / unique id is not the child's linkage); exit 2 for readers, ``merge``
    refuses it (exit 3)."""


class NotFoundError(InputError):
    """A path, key, value, volume or guest that is not there (exit 2)."""

    kind = "not_found"


class MissingKeyError(NotFoundError):
    """A write names a value under a registry key that does not exist and is not to be
    created (exit 2); ``reg set`` adds how to create it."""


class WriteFailure(InputError):
    """A write the file system refused (full disk, I/O error); the message says what the
    file holds afterwards, as read back (exit 2)."""

    kind = "write_failed"


class SafetyRefusal(OfflineICError):
    """Refused to write because writing would not be safe; nothing was written (exit 3)."""

    exit_code = 3
    kind = "refused"


class ParentOfChildren(SafetyRefusal):
    """A VHDX that other disks use as their parent was to be written: it would break their
    linkage (exit 3). ``advice`` is what the command offers instead: ``fix`` has no --force."""

    def __init__(
        self,
        name: str,
        children: Sequence[str],
        advice: str = "write into a new child with --output CHILD.avhdx, or --force",
    ) -> None:
        self.name, self.children = name, list(children)
        names = ", ".join(os.path.basename(c) for c in self.children)
        their = "their" if len(self.children) > 1 else "its"
        super().__init__(
            f"{name}: is the parent of {names}; writing it would break {their} parent "
            f"linkage ({advice})"
        )


class CheckFailed(OfflineICError):
    """A check ran and found a failure (exit 1)."""

    exit_code = 1
    kind = "check_failed"


@contextmanager
def parsing(
    what: str,
    error: type[InputError] = CorruptImageError,
    extra: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """The error boundary around a third-party parser reading untrusted bytes: what it raises
    becomes ``error`` naming ``what`` (the file and structure), one line, exit 2."""
    try:
        yield
    except OfflineICError:
        raise
    except (*PARSER_ERRORS, *extra) as exc:
        if os.environ.get("OFFLINE_IC_DEBUG"):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise error(f"{what}: {type(exc).__name__}{': ' + detail if detail else ''}") from exc


def toml_number_error(exc: ValueError) -> str:
    """The message for a ValueError tomllib lets out (not a TOMLDecodeError): Python refuses
    to convert an integer of more than 4300 digits; any other is named as it is."""
    text = str(exc)
    if "digits" in text:
        return "an integer in the file is too long (more than 4300 digits)"
    return f"not valid TOML ({text.splitlines()[0] if text else type(exc).__name__})"

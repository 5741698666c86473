"""Errors that the CLI turns into one line on stderr and an exit code.

Every layer raises one of these for anything the user can cause (bad path, corrupt
image, dirty volume); anything else is a bug and is allowed to show a traceback.
"""


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


class NotFoundError(InputError):
    """A path, key, value, volume or guest that is not there (exit 2)."""

    kind = "not_found"


class SafetyRefusal(OfflineICError):
    """Refused to write because writing would not be safe; nothing was written (exit 3)."""

    exit_code = 3
    kind = "refused"


class CheckFailed(OfflineICError):
    """A check ran and found a failure (exit 1)."""

    exit_code = 1
    kind = "check_failed"

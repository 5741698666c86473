"""What ``recover`` would do, found without opening the image for writing (``--dry-run``).

``verify.recover_image`` opens the image writable: that open is what replays a pending VHDX
log or rolls back an undo journal. Here the same file is opened read-only, which replays
the log in memory only and reads a journal without applying it, after the refusals the
writable open would make (``check_writable``: a read-only file, another writer's lock).
"""

from __future__ import annotations

from offline_ic.image import check_writable, open_image
from offline_ic.image.journal import pending
from offline_ic.image.vhdx import VhdxReader
from offline_ic.inputs import require_regular


def planned_recovery(path: str, parent: str | None = None) -> str:
    """The sentence ``recover_image`` would return, in the conditional ("would replay ..."),
    or "nothing to recover"; raises what the real run would raise before its first write."""
    require_regular(path)
    check_writable(path, parent=parent, force=True)  # recover writes parents of children too
    with open_image(path, parent=parent) as img:  # a foreign journal is refused here too
        if isinstance(img, VhdxReader) and img.header.log_guid.int:
            entries = img.overlay.entries
            return f"would replay {entries} VHDX log entries and retire the log"
    if pending(path):
        return "would roll back an interrupted write from the undo journal"
    return "nothing to recover"

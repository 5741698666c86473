"""The result of one check: a stable id, a status and a one-line reason with its evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# info: not checkable offline, or not applicable (a service this Windows release lacks);
# skip: left out by a policy's ``skip`` (still reported, so a gate shows what it did not check)
Status = Literal["pass", "warn", "fail", "info", "skip"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "info", "skip")


@dataclass(frozen=True)
class CheckResult:
    """``id`` is stable across releases (e.g. ``linux.initramfs.hv_storvsc``): policies name it."""

    id: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status, "detail": self.detail}

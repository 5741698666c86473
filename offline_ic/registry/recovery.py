"""Recovery of a dirty hive from its transaction logs (.LOG1/.LOG2) — in progress."""

from __future__ import annotations

from dataclasses import dataclass

from offline_ic.errors import SafetyRefusal


@dataclass
class RecoveryResult:
    """The recovered hive bytes and what was applied."""

    data: bytearray
    applied_entries: int
    base_block_from_log: bool


def recover_bytes(
    primary: bytes, log1: bytes | None, log2: bytes | None, *, name: str = "hive"
) -> RecoveryResult:
    """Replay the logs into a copy of the primary (not yet implemented: refuse)."""
    raise SafetyRefusal(f"{name}: hive is dirty and log recovery is not implemented yet")

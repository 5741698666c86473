"""Our own VHDX implementation (MS-VHDX v1): reader, log replay, writer and child creator.

``structures`` holds the on-disk layouts; ``image`` reads; ``log`` finds, replays and builds
log entries; ``writer`` changes files through the log; ``create`` makes new VHDX files.
"""

from offline_ic.image.vhdx.image import VhdxImage

__all__ = ["VhdxImage"]

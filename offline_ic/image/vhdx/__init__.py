"""Our own VHDX implementation (MS-VHDX v1): reader, log replay, writer and child creator.

``structures`` holds the on-disk layouts; ``image`` reads (``VhdxReader``); ``log`` finds,
replays and builds log entries; ``writer`` changes files through the log (``VhdxImage``, the
reader plus its write session); ``create`` makes new VHDX files.
"""

from offline_ic.image.vhdx.image import VhdxReader
from offline_ic.image.vhdx.writer import VhdxImage, VhdxWriteSession

__all__ = ["VhdxImage", "VhdxReader", "VhdxWriteSession"]

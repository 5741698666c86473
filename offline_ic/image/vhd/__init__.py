"""Our own VHD (v1) implementation: layouts (``structures``), reader (``image.VhdReader``)
and writer (``writer.VhdImage``: the reader plus its undo-journaled writes)."""

from offline_ic.image.vhd.image import Footer, VhdReader
from offline_ic.image.vhd.writer import VhdImage

__all__ = ["Footer", "VhdImage", "VhdReader"]

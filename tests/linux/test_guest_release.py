"""A Linux guest opened and closed leaves nothing of its image behind in the process.

Fleet workers read thousands of images in one process. dissect.target's probe of every
file-system class re-raised one stored ImportError per missing optional package, and each
raise chained the caller's frames (holding the volume's stream, hence the disk image) onto
that exception: every btrfs image ever opened stayed in memory. The ext4 fuzz target found
it as a steady growth; here each layout the Linux checks open is opened and dropped.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from offline_ic.guest.linux.guest import open_linux_guest
from offline_ic.image import open_image


@pytest.mark.parametrize("case", ["arch-btrfs", "rhel-lvm-xfs", "debian-good", "debian-split-usr"])
def test_an_opened_guest_is_released_with_its_image(linux_images, case):
    refs = []
    for _ in range(3):
        image = open_image(str(linux_images[case]))
        guest = open_linux_guest(image)
        assert guest is not None and guest.os_release  # the layout was really read
        refs.append(weakref.ref(image))
        del guest
        image.close()
        del image
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


def test_a_volume_is_opened_as_the_file_system_it_was_sniffed_as(tmp_path):
    """Not whichever of dissect's formats matches: a kind we do not read is refused."""
    import io

    from offline_ic.errors import CorruptImageError
    from offline_ic.fs.dissect_open import open_dissect_filesystem

    for kind in (None, "swap", "lvm2"):
        with pytest.raises(CorruptImageError, match="not readable here"):
            open_dissect_filesystem(io.BytesIO(b"\0" * 8192), kind, "vol")

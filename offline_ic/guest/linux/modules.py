"""Is a kernel module available for a kernel: as a file, built in, or not at all.

Evidence, strongest first: the module file (``.ko``, ``.ko.gz``, ``.ko.xz``, ``.ko.zst``)
found through ``modules.dep`` (what modprobe itself reads) or under the modules tree;
``modules.builtin``; the kernel's ``config`` (``=y`` built in, ``=m`` module).
Module names are compared with ``-`` and ``_`` equal, as kmod does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from offline_ic.guest.linux.fs import GuestFS
from offline_ic.guest.linux.kernels import Kernel

MODULE_EXTS = (".ko", ".ko.gz", ".ko.xz", ".ko.zst")

# module -> Kconfig symbols that build it (CONFIG_HYPERV_VMBUS took over in 6.18).
MODULE_CONFIG = {
    "hv_vmbus": ("CONFIG_HYPERV_VMBUS", "CONFIG_HYPERV"),
    "hv_utils": ("CONFIG_HYPERV_UTILS",),
    "hv_storvsc": ("CONFIG_HYPERV_STORAGE",),
    "hv_netvsc": ("CONFIG_HYPERV_NET",),
    "hv_balloon": ("CONFIG_HYPERV_BALLOON",),
    "hid_hyperv": ("CONFIG_HID_HYPERV_MOUSE",),
    "hyperv_keyboard": ("CONFIG_HYPERV_KEYBOARD",),
    "hyperv_drm": ("CONFIG_DRM_HYPERV",),
    "hyperv_fb": ("CONFIG_FB_HYPERV",),
    "pci_hyperv": ("CONFIG_PCI_HYPERV",),
    "udf": ("CONFIG_UDF_FS",),  # Azure's provisioning media (profile azure)
    "vfat": ("CONFIG_VFAT_FS",),
}
# Where the modules live in the kernel tree, to look without walking 5000 files.
MODULE_DIRS = {
    "hv_vmbus": "drivers/hv",
    "hv_utils": "drivers/hv",
    "hv_balloon": "drivers/hv",
    "hv_storvsc": "drivers/scsi",
    "hv_netvsc": "drivers/net/hyperv",
    "hid_hyperv": "drivers/hid",
    "hyperv_keyboard": "drivers/input/serio",
    "hyperv_drm": "drivers/gpu/drm/hyperv",
    "hyperv_fb": "drivers/video/fbdev",
    "pci_hyperv": "drivers/pci/controller",
    "udf": "fs/udf",
    "vfat": "fs/fat",
}


def norm(name: str) -> str:
    """Canonical module name: file name without directory and extension, '-' as '_'."""
    base = name.rsplit("/", 1)[-1]
    for ext in MODULE_EXTS:
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


@dataclass
class ModuleStatus:
    """How ``name`` is available for one kernel: ``how`` is file|builtin|config-y|missing."""

    name: str
    how: str
    evidence: str

    @property
    def available(self) -> bool:
        return self.how != "missing"

    @property
    def builtin(self) -> bool:
        return self.how in ("builtin", "config-y")


class KernelModules:
    """Module facts of one kernel, read once (modules.dep, modules.builtin, config)."""

    def __init__(self, gfs: GuestFS, kernel: Kernel):
        self.gfs = gfs
        self.kernel = kernel
        self.dep: dict[str, str] = {}  # name -> relative path from modules.dep
        self.builtin: dict[str, int] = {}  # name -> line in modules.builtin
        self.config: dict[str, tuple[str, int]] = {}
        self.notes: list[str] = []
        mdir = kernel.modules_dir
        if mdir:
            text = gfs.try_text(f"{mdir}/modules.dep", 16 << 20)
            if text is not None:
                for line in text.splitlines():
                    path = line.split(":", 1)[0].strip()
                    if path:
                        self.dep.setdefault(norm(path), path)
            text = gfs.try_text(f"{mdir}/modules.builtin", 4 << 20)
            if text is not None:
                for no, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        self.builtin.setdefault(norm(line.strip()), no)
        if kernel.config:
            text = gfs.try_text(kernel.config, 4 << 20) or ""
            for no, line in enumerate(text.splitlines(), 1):
                m = re.match(r"(CONFIG_[A-Za-z0-9_]+)=(\S+)", line)
                if m:
                    self.config[m.group(1)] = (m.group(2), no)

    def status(self, name: str) -> ModuleStatus:
        """Availability of module ``name`` for this kernel, with its evidence."""
        name = norm(name)
        mdir = self.kernel.modules_dir
        if mdir:
            rel = self.dep.get(name)
            path = (rel if rel.startswith("/") else f"{mdir}/{rel}") if rel else None
            if path and self.gfs.exists(path):  # old depmod wrote absolute paths
                return ModuleStatus(name, "file", path)
            found = self._find_file(name)
            if found:
                extra = "" if not self.dep or rel else " (not in modules.dep: run depmod)"
                return ModuleStatus(name, "file", found + extra)
            if name in self.builtin:
                return ModuleStatus(name, "builtin", f"{mdir}/modules.builtin:{self.builtin[name]}")
        cfg = self._config(name)
        if cfg is not None:
            sym, value, no = cfg
            where = f"{self.kernel.config}:{no}: {sym}={value}"
            if value == "y":
                return ModuleStatus(name, "config-y", where)
            if value == "m":
                missing_in = mdir or "no modules directory"
                return ModuleStatus(name, "missing", f"{where} but no module file in {missing_in}")
        where = mdir or "no modules directory"
        return ModuleStatus(name, "missing", f"not in {where} nor built in")

    def _config(self, name: str) -> tuple[str, str, int] | None:
        for sym in MODULE_CONFIG.get(name, ()):
            if sym in self.config:
                value, no = self.config[sym]
                return sym, value, no
        return None

    def _find_file(self, name: str) -> str | None:
        mdir = self.kernel.modules_dir
        assert mdir
        names = {name, name.replace("_", "-")}
        subdirs = ["kernel/" + MODULE_DIRS[name]] if name in MODULE_DIRS else []
        subdirs += ["updates", "extra", "weak-updates"]
        for sub in subdirs:
            base = f"{mdir}/{sub}"
            for entry in self.gfs.listdir(base):
                if norm(entry) in names and entry.endswith(MODULE_EXTS):
                    return f"{base}/{entry}"
            if sub in ("updates", "extra", "weak-updates"):
                for path in self.gfs.walk_files(base, max_entries=20_000):
                    if norm(path) in names and path.endswith(MODULE_EXTS):
                        return path
        return None

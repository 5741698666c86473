"""offline-ic: inspect and service the Hyper-V integration services of stopped VMs' disks."""

__version__ = "0.1.0"

"""Host side of a VM: its Hyper-V configuration (.vmcx), read-only."""

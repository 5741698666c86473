"""On-disk records of Linux guest files, declared once (see offline_ic/layout.py)."""

from __future__ import annotations

from offline_ic.layout import Layout

# glibc's struct utmp on 64-bit Linux (x86_64, aarch64): /var/log/wtmp is an array of these.
UTMP = Layout(
    "Utmp",
    [
        ("type", "h"),  # 1 RUN_LVL (shutdown: user "shutdown"), 2 BOOT_TIME, 7 USER_PROCESS
        ("pad", "2s"),
        ("pid", "i"),
        ("line", "32s"),
        ("id", "4s"),
        ("user", "32s"),
        ("host", "256s"),  # for boot and shutdown records: the kernel release
        ("exit_termination", "h"),
        ("exit_status", "h"),
        ("session", "i"),
        ("tv_sec", "i"),
        ("tv_usec", "i"),
        ("addr_v6", "16s"),
        ("unused", "20s"),
    ],
)
assert UTMP.size == 384

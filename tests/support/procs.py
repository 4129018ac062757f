"""Which processes are still there: the tests' check that nothing was left running."""

from __future__ import annotations

import os


def processes_mentioning(text: str) -> list[int]:
    """PIDs of the processes (other than this one) whose command line mentions ``text``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids

"""Facts about the running process that benchmarks and tests report."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_kib() -> int:
    """This process's own peak resident memory in KiB.

    On Linux it is ``VmHWM`` of ``/proc/self/status``, which starts afresh at ``exec``. ``ru_maxrss``
    does not: a process started by ``subprocess`` (vfork or fork, then exec) inherits its parent's
    peak, so a small command run from a 2 GiB test worker reported 2 GiB. Elsewhere, ``ru_maxrss``
    (KiB on Linux and the BSDs; bytes on macOS, converted)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak

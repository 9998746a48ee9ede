"""The CPU llama.cpp runs on: how many threads to give it, and whether it has AMX tiles."""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores() -> int:
    """Physical cores (not hyper-threads): llama.cpp runs best with one thread per core."""
    seen: set[str] = set()
    base = Path("/sys/devices/system/cpu")
    for topology in base.glob("cpu[0-9]*/topology/thread_siblings_list"):
        try:
            seen.add(topology.read_text().strip())
        except OSError:
            continue
    if seen:
        return len(seen)
    return max(1, (os.cpu_count() or 2) // 2)


def cpu_has_amx() -> bool:
    """Whether the CPU has Intel AMX tiles (Sapphire Rapids and later)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False

"""The CPU llama.cpp runs on: how many threads to give it, whether it has AMX tiles, and
which thread may run llama.cpp work beside a live engine."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


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


def on_own_thread(function: Callable[[], T], *, name: str) -> asyncio.Future[T]:
    """Run `function`, which runs llama.cpp (a decode, a measurement), on a thread of its own
    that ends with it; the future of its result.

    llama.cpp computes on OpenMP threads (libgomp): every thread that runs a decode keeps a team
    of them for as long as it lives. While the teams hold more threads than the machine has
    cores, libgomp makes each team wait for its threads by sleeping instead of spinning, and a
    decode, a few hundred short parallel steps, gets much slower: on 2 cores a pool's one-token
    step went from 11 ms to 28 ms, for as long as the other thread lived. An executor thread
    (asyncio.to_thread, run_in_executor) lives on after its work, and with it its team; a
    thread of its own takes its team along when it ends."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future

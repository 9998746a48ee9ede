"""systemd's service notification protocol (sd_notify): readiness, status, watchdog, stopping.

One datagram of newline-separated ``KEY=value`` lines to the socket in ``$NOTIFY_SOCKET`` (a path,
or an abstract name when it starts with ``@``). Outside systemd every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SystemdNotifier:
    """Talks to the service manager that started us, if any.

    ``address`` is the notify socket (None: not under systemd, or not a Type=notify unit);
    ``watchdog_interval`` is how often to ping (half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    recommends), None when no watchdog is expected from this process.
    """

    address: str | None = None
    watchdog_interval: float | None = None

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # Linux abstract namespace
        return cls(address=address, watchdog_interval=_watchdog_interval(env, pid or os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; False if it could not be sent."""
        if self.address is None or not assignments:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop on a manager that stopped reading.
                sock.setblocking(False)
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("could not notify systemd at %s: %s", self.address.replace("\0", "@"), exc)
            return False
        return True

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def ready(self, status: str | None = None) -> bool:
        """The service is up: systemd's Type=notify start-up is complete."""
        lines = ["READY=1"] + ([f"STATUS={_one_line(status)}"] if status else [])
        return self.notify(*lines)

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"] + ([f"STATUS={_one_line(status)}"] if status else [])
        return self.notify(*lines)

    def ping(self) -> bool:
        return self.notify("WATCHDOG=1")

    @contextlib.asynccontextmanager
    async def watchdog(self) -> AsyncIterator[None]:
        """Ping the watchdog from the event loop while the block runs.

        The pings come from a task on this loop, not a thread: a loop that hangs (a blocking call,
        a deadlock) stops pinging, and systemd kills and restarts the service.
        """
        if self.address is None or self.watchdog_interval is None:
            yield
            return
        task = asyncio.create_task(self._ping_forever(self.watchdog_interval), name="watchdog")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _ping_forever(self, interval: float) -> None:
        while True:
            self.ping()
            await asyncio.sleep(interval)


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Half the watchdog timeout, if the manager expects pings from this very process."""
    try:
        usec = int(env.get("WATCHDOG_USEC") or 0)
        watchdog_pid = int(env.get("WATCHDOG_PID") or 0)
    except ValueError:
        log.warning("ignoring a malformed WATCHDOG_USEC or WATCHDOG_PID")
        return None
    if usec <= 0 or (watchdog_pid and watchdog_pid != pid):
        return None
    return usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(text.split())

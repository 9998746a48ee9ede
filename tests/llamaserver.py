"""Real llama.cpp `llama-server` processes on loopback, for tests of the remote engine.

The binary is the one native/server.sh builds from the same llama.cpp as the wheel. Each server
logs to a file of its own, which failures quote, so test output stays quiet.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from tests.cpu import THREADS

REPO = Path(__file__).resolve().parent.parent
BINARY_ENV = "ALPACA_BOT_LLAMA_SERVER"
STARTUP_TIMEOUT = 60.0
STOP_GRACE = 3.0


class LlamaServerError(RuntimeError):
    """The binary is missing or a server did not start; the message quotes its log."""


def find_llama_server() -> Path:
    """$ALPACA_BOT_LLAMA_SERVER, else the venv's link (`make llama-server`), else the cache."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LlamaServerError(f"{BINARY_ENV}={configured} is not an executable file")
        return path
    linked = REPO / ".venv" / "bin" / "llama-server"
    if linked.exists():
        return linked
    found = subprocess.run(
        ["bash", str(REPO / "native" / "server.sh"), "--cached"],
        capture_output=True, text=True, check=False,
    )
    if found.returncode == 0 and found.stdout.strip():
        return Path(found.stdout.strip())
    raise LlamaServerError(
        "llama-server is not built: run `make llama-server` (or `bash native/server.sh`), "
        f"or point {BINARY_ENV} at a binary"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """One llama-server on 127.0.0.1 serving a model; a context manager, sync or async.

    `start()` again after `stop()` or `kill()` brings it back on the same port, as a backend that
    comes back would.
    """

    def __init__(
        self,
        model: Path,
        *,
        slots: int = 1,
        ctx: int = 512,
        threads: int = THREADS,
        batch: int | None = None,
        slot_save_path: Path | None = None,
        api_key: str | None = None,
        repack: bool = False,
        extra_args: Sequence[str] = (),
        binary: Path | None = None,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.model = model
        self.slots = slots
        self.ctx = ctx
        self.threads = threads
        self.batch = batch
        self.slot_save_path = slot_save_path
        self.api_key = api_key
        self.repack = repack
        self.extra_args = tuple(extra_args)
        self.binary = binary
        self.startup_timeout = startup_timeout
        self._port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._starts = 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise LlamaServerError("the server has no port before its first start()")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise LlamaServerError("the server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends: the API key if there is one."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise LlamaServerError("the server has no log before its first start()")
        return self._dir / f"server-{self._starts}.log"

    def command(self) -> list[str]:
        binary = self.binary or find_llama_server()
        args = [
            str(binary), "--model", str(self.model),
            "--host", "127.0.0.1", "--port", str(self.port), "--no-webui",
            "--parallel", str(self.slots), "--ctx-size", str(self.ctx),
            "--threads", str(self.threads), "--log-colors", "off",
        ]
        if self.batch is not None:
            args += ["--batch-size", str(self.batch)]
        if self.slot_save_path is not None:
            args += ["--slot-save-path", str(self.slot_save_path)]
        if self.api_key is not None:
            args += ["--api-key", self.api_key]
        if not self.repack:
            # llama.cpp's AMX kernels (chosen through weight repacking on CPUs with AMX) crash on
            # the demo model's prompt batches; the wheel has the same fault with use_extra_bufts.
            args.append("--no-repack")
        return args + list(self.extra_args)

    def start(self) -> LlamaServer:
        """Start the server and wait until /health answers 200."""
        if self.running:
            raise LlamaServerError(f"the server on port {self.port} is already running")
        if self._port is None:
            self._port = free_port()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="llama-server-"))
        self._starts += 1
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=2.0) as client:
            while True:
                code = self._process.poll() if self._process is not None else None
                if code is not None:
                    raise LlamaServerError(f"llama-server exited with {code} while starting\n{self.log_tail()}")
                try:
                    if client.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise LlamaServerError(
                        f"llama-server not healthy after {self.startup_timeout:.0f} s\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then wait for it to exit.

        A server with a stream open stops generating on SIGTERM but waits for that client to hang
        up before it exits; a second SIGTERM makes it exit at once (status 1), SIGKILL is the last
        resort.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        for _ in range(2):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE)
                return
            except subprocess.TimeoutExpired:
                pass
        process.kill()
        process.wait()

    def kill(self) -> None:
        """SIGKILL, as a backend dying mid-reply would."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server and remove its logs."""
        try:
            self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, LlamaServerError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def astart(self) -> LlamaServer:
        """start() off the event loop, so a running bot keeps serving while a backend comes up."""
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> LlamaServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> LlamaServer:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LlamaServer({self.model.name}, port={self._port}, slots={self.slots}, ctx={self.ctx}, {state})"

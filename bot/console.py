"""The terminal chat, like llama.cpp's `./main -ins`: a `>` prompt, `\\` continues a line,
Ctrl+C stops a reply (at the prompt it exits), the bot's slash commands, stored like a chat."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

from bot.core.params import BY_COMMAND
from bot.errors import UserError
from bot.service import ChatService
from bot.store.repository import ChatRef

CONSOLE_CHAT = ChatRef(chat_id=0, kind="console", title="console")
CONSOLE_HELP = """\
Type a message and press Enter; end a line with \\ to continue on the next one.
Ctrl+C stops a reply; Ctrl+C at the prompt (or Ctrl+D, or /quit) exits.
Commands: /temp /ctx /n /top_k /top_p /repeat_penalty [VALUE], /system [TEXT|default],
/reset, /settings, /help, /quit"""

USER_COLOR = "\033[1;32m"
MODEL_COLOR = "\033[0m"
NOTE_COLOR = "\033[2m"
RESET = "\033[0m"


class ConsoleSink:
    """Prints a reply as it streams."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self._out = out
        self._color = color
        self._printed = ""
        self.on_messages: Callable[[Sequence[int]], Awaitable[None]] | None = None

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    async def waiting(self, ahead: int) -> None:
        self._write(f"{NOTE_COLOR if self._color else ''}(waiting: {ahead} ahead)"
                    f"{RESET if self._color else ''}\n")

    async def update(self, text: str) -> None:
        text = text.lstrip()
        if text.startswith(self._printed):
            if not self._printed and self._color:
                self._write(MODEL_COLOR)
            self._write(text[len(self._printed) :])
            self._printed = text

    async def finish(self, text: str, note: str | None = None) -> Sequence[int]:
        await self.update(text)
        if note:
            self._write(f"\n{NOTE_COLOR if self._color else ''}{note}"
                        f"{RESET if self._color else ''}")
        self._write("\n")
        return []

    async def fail(self, message: str) -> None:
        self._write(f"{message}\n")


class LineReader:
    """Reads stdin on a daemon thread, so a blocked read never keeps the program alive."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: TextIO) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = loop
        self._stream = stream
        self._want = threading.Semaphore(0)
        threading.Thread(target=self._read, name="console-input", daemon=True).start()

    def _read(self) -> None:
        while True:
            self._want.acquire()
            try:
                line = input() if self._stream is sys.stdin else self._stream.readline()
                if self._stream is not sys.stdin and line == "":
                    raise EOFError
                item: str | None = line.rstrip("\n")
            except (EOFError, OSError, ValueError):
                item = None
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            if item is None:
                return

    async def readline(self) -> str | None:
        self._want.release()
        return await self._queue.get()


async def read_message(reader: LineReader, out: TextIO, color: bool) -> str | None:
    """One message: lines ending with a backslash continue. None at end of input."""
    lines: list[str] = []
    prompt = "> "
    while True:
        out.write(f"{USER_COLOR if color else ''}{prompt}")
        out.flush()
        line = await reader.readline()
        if color:
            out.write(RESET)
        if line is None:
            return "\n".join(lines) if lines else None
        if line.endswith("\\"):
            lines.append(line[:-1])
            prompt = ""
            continue
        lines.append(line)
        return "\n".join(lines)


async def handle_command(service: ChatService, text: str) -> str | None:
    """Run a slash command; returns the answer, or None for /quit."""
    name, _, argument = text[1:].partition(" ")
    name = name.lower()
    argument = argument.strip()
    if name in ("quit", "exit"):
        return None
    try:
        if name in BY_COMMAND:
            if argument:
                return await service.set_param(CONSOLE_CHAT, name, argument)
            return await service.show_param(CONSOLE_CHAT, name)
        if name == "system":
            if argument:
                return await service.set_system(CONSOLE_CHAT, argument)
            return await service.show_system(CONSOLE_CHAT)
        if name == "reset":
            return await service.reset(CONSOLE_CHAT)
        if name == "settings":
            return await service.settings_text(CONSOLE_CHAT)
        if name == "stop":
            return "Nothing to stop (Ctrl+C stops a reply)."
        if name in ("help", "start"):
            return CONSOLE_HELP
        return f"Unknown command /{name}. /help lists the commands."
    except UserError as exc:
        return str(exc)


async def run_console(
    service: ChatService,
    *,
    color: bool = False,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    banner: str | None = None,
) -> None:
    """The interactive loop, until end of input, /quit or Ctrl+C at the prompt."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    loop = asyncio.get_running_loop()
    reader = LineReader(loop, stdin)
    generating = False
    interrupted = asyncio.Event()

    def on_interrupt() -> None:
        if generating:
            service.stop(CONSOLE_CHAT.chat_id)
        else:
            interrupted.set()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        if banner:
            out.write(banner + "\n")
        out.write(CONSOLE_HELP + "\n\n")
        while True:
            read = asyncio.ensure_future(read_message(reader, out, color))
            waiter = asyncio.ensure_future(interrupted.wait())
            await asyncio.wait({read, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if interrupted.is_set():
                read.cancel()
                out.write("\n")
                return
            waiter.cancel()
            text = read.result()
            if text is None:
                out.write("\n")
                return
            text = text.strip()
            if not text:
                continue
            if text.startswith("/"):
                reply = await handle_command(service, text)
                if reply is None:
                    return
                out.write(reply + "\n")
                continue
            try:
                accepted = await service.accept(CONSOLE_CHAT, text)
            except UserError as exc:
                out.write(f"{exc}\n")
                continue
            generating = True
            try:
                await service.answer(accepted, ConsoleSink(out, color))
            finally:
                generating = False
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)

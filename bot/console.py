"""The terminal chat, like llama.cpp's `./main -ins`: a `>` prompt, `\\` continues a line,
Ctrl+C stops a reply (at the prompt it exits), the bot's slash commands, stored like a chat."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

from bot import i18n
from bot.chat import ChatService, ReplySink
from bot.chat.commands import BY_NAME, Access, FrontName, Invocation, commands_for, dispatch
from bot.chat.hearing import heading
from bot.chat.redo import RedoPlan
from bot.chat.sink import STALLED_NOTE, ReplyAction
from bot.core.chats import ChatRef
from bot.engine.base import Queued
from bot.errors import UserError
from bot.i18n import N_, _, _n
from bot.reading.context import ContextItem
from bot.speech import SpeechError, VoiceOff

CONSOLE_CHAT = ChatRef(chat_id=0, kind="console", title="console")
CONSOLE_INTRO = N_(
    "Type a message and press Enter; end a line with \\ to continue on the next one.\n"
    "Ctrl+C stops a reply; Ctrl+C at the prompt (or Ctrl+D, or /quit) exits."
)


def console_banner() -> str:
    """What the console shows first: how to type, and every command of the table."""
    names = " ".join(f"/{command.name}" for command in commands_for("console"))
    return _(CONSOLE_INTRO) + "\n" + _("Commands: {names} (/help explains them)", names=names)


USER_COLOR = "\033[1;32m"
MODEL_COLOR = "\033[0m"
NOTE_COLOR = "\033[2m"
RESET = "\033[0m"


THINKING = N_("thinking…")
THINKING_FOR = N_("thinking… {seconds} s")


class ConsoleSink:
    """Prints a reply as it streams; a thinking model's thinking dimmed above it (/reasoning
    show), or one "thinking…" line while it thinks (hide)."""

    def __init__(self, out: TextIO, color: bool, *, printed: str = "") -> None:
        """`printed`: the reply's text already on screen (a reply that goes on)."""
        self._out = out
        self._color = color
        self._printed = printed.lstrip()
        self._thought = ""
        """The thinking printed so far (shown), or a status line's text (hidden)."""
        self._thinking_line = False
        """A thinking line is on screen, not yet ended."""

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    async def waiting(self, ahead: int, *, stalled: bool = False) -> None:
        note = (
            "(" + _(STALLED_NOTE) + ")" if stalled
            else _n("(waiting: {n} ahead)", "(waiting: {n} ahead)", ahead)
        )
        self._write(f"{NOTE_COLOR if self._color else ''}{note}{RESET if self._color else ''}\n")

    async def thinking(self, text: str | None, seconds: float) -> None:
        dim, reset = (NOTE_COLOR, RESET) if self._color else ("", "")
        if text is None:
            # On a terminal the line counts the seconds in place; elsewhere it is said once.
            status = _(THINKING_FOR, seconds=int(seconds)) if self._color else _(THINKING)
            if status != self._thought and (self._color or not self._thinking_line):
                self._write(f"\r{dim}{status}{reset}" if self._color else f"{status}")
                self._thought, self._thinking_line = status, True
            return
        text = text.lstrip()
        if text.startswith(self._thought):
            self._write(f"{dim}{text[len(self._thought):]}{reset}")
        else:  # the reply started over on another model server
            self._write(f"\n{dim}{text}{reset}")
        self._thought, self._thinking_line = text, True

    def _end_thinking(self) -> None:
        if self._thinking_line:
            self._write("\n")
            self._thinking_line = False

    async def update(self, text: str, *, complete: bool = False) -> None:
        text = text.lstrip()
        if text and text != self._printed:
            self._end_thinking()
        if text.startswith(self._printed):
            if not self._printed and self._color:
                self._write(MODEL_COLOR)
            self._write(text[len(self._printed) :])
            self._printed = text
        else:  # the reply started over on another model server
            note = _("(the reply starts over)")
            self._write(f"\n{NOTE_COLOR if self._color else ''}{note}"
                        f"{MODEL_COLOR if self._color else ''}\n{text}")
            self._printed = text

    async def finish(
        self, text: str, note: str | None = None, *, actions: Sequence[ReplyAction] = (),
        thinking: str | None = None,
    ) -> Sequence[int]:
        if thinking and not self._thought.strip():  # shown, and not streamed
            await self.thinking(thinking, 0.0)
        self._end_thinking()
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


class ConsoleFront:
    """The console chat as a `Front` for the command table: its user may run everything."""

    name: FrontName = "console"

    def __init__(self, service: ChatService, out: TextIO, color: bool,
                 language: str = i18n.SOURCE) -> None:
        self._service = service
        self.language = language
        """The console user's own language (the locale's or --lang)."""
        self._out = out
        self._color = color
        self.generating = False
        self.quitting = False

    def intro(self, ref: ChatRef) -> str:
        return _(CONSOLE_INTRO)

    async def ask(self, text: str, *, context: Sequence[ContextItem] = (),
                  heard_seconds: float | None = None) -> None:
        """`heard_seconds`: the question was heard in an audio file that long (/listen)."""
        try:
            accepted = await self._service.conversation.accept(
                CONSOLE_CHAT, text, context=context, heard_seconds=heard_seconds,
                heard_from="file" if heard_seconds is not None else None)
        except UserError as exc:
            self._out.write(f"{exc}\n")
            return
        sink = ConsoleSink(self._out, self._color)
        await self._generating(self._service.conversation.write_reply(accepted, sink))

    async def hear(self, argument: str) -> str | None:
        """/listen FILE: an audio file heard as a voice note in this chat: what was heard,
        then the reply to it."""
        path = Path(argument.strip())
        hearing, sink = self._service.hearing, ConsoleSink(self._out, self._color)

        async def show_place(place: Queued) -> None:
            await sink.waiting(place.ahead, stalled=place.stalled)

        try:
            path = await asyncio.to_thread(path.expanduser)
            if not await asyncio.to_thread(path.is_file):
                return _("No such file: {path}", path=path)
            if not hearing.enabled:
                raise VoiceOff("asr_model is empty")
            heard = await hearing.transcribe(path, chat_key=str(CONSOLE_CHAT.chat_id),
                                             hint=self.language, on_place=show_place)
        except (SpeechError, UserError) as exc:
            return hearing.refusal(exc)
        self._out.write(heading(heard.text) + "\n")
        await self.ask(heard.text, heard_seconds=heard.seconds)
        return None

    async def read(self, argument: str) -> str | None:
        """/read FILE [QUESTION]: a document is read and kept for the questions that follow (a
        question after its name is asked at once); a picture's text is asked about."""
        path, question = _file_and_question(argument)
        try:
            item, taken = await self._service.reading.read_path(CONSOLE_CHAT, path)
        except UserError as exc:
            return str(exc)
        if taken is not None:
            self._out.write(taken.acknowledgement(asked=bool(question)) + "\n")
            if not question:
                return None
        await self.ask(question, context=[item])
        return None

    async def redo(self, plan: RedoPlan) -> None:
        """/retry prints the new reply; /continue prints what follows the last one."""
        printed = ""
        if plan.redo == "continue":
            printed = plan.shown
            self._out.write("…")
        sink = ConsoleSink(self._out, self._color, printed=printed)
        await self._generating(self._service.redo.write_again(plan.accepted, sink, plan.redo))

    async def _generating(self, writing: Awaitable[object]) -> None:
        """Await a reply being written (Ctrl+C meanwhile stops it instead of exiting)."""
        self.generating = True
        try:
            await writing
        finally:
            self.generating = False

    async def later(self, first: str, work: Callable[[], Awaitable[str]]) -> None:
        self._out.write(first + "\n")
        self._out.flush()
        self._out.write(await work() + "\n")

    def progress(self) -> ReplySink:
        return ConsoleSink(self._out, self._color)

    def quit(self) -> None:
        self.quitting = True

    async def allowed(self, access: Access) -> bool:
        return True  # whoever has the terminal runs the bot

    async def present(self, text: str, *, photo: Path | None = None,
                      switch_to: str | None = None) -> None:
        lines = [text]
        if photo is not None:
            lines.append(_("Chart: {path}", path=photo))
        if switch_to is not None:
            lines.append(_("Switch to it with /model {name}", name=switch_to))
        self._out.write("\n".join(lines) + "\n")
        self._out.flush()


def _file_and_question(argument: str) -> tuple[Path, str]:
    """/read's argument: a file (quoted if its name has spaces, or the whole argument if it
    names a file), then the question."""
    whole = Path(argument.strip()).expanduser()
    if whole.is_file():
        return whole, ""
    try:
        first, *rest = shlex.split(argument)
    except ValueError:
        first, _space, question = argument.strip().partition(" ")
        return Path(first).expanduser(), question.strip()
    return Path(first).expanduser(), " ".join(rest)


async def handle_command(front: ConsoleFront, service: ChatService, text: str) -> str | None:
    """Run a slash command from the table; returns the answer to print, if any."""
    name, _space, argument = text[1:].partition(" ")
    call = Invocation(ref=CONSOLE_CHAT, argument=argument.strip(), own_language=front.language)
    try:
        return await dispatch(service, front, name, call, allowed=front.allowed)
    except KeyError:
        if name.lower() in BY_NAME:
            return _("/{name} works in Telegram only.", name=name)
        return _("Unknown command /{name}. /help lists the commands.", name=name)


async def _speak(service: ChatService, own: str) -> None:
    """Answer in the console chat's /lang, else in `own`."""
    i18n.use(await service.languages.language_for(CONSOLE_CHAT, own))


async def run_console(
    service: ChatService,
    *,
    color: bool = False,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    banner: str | None = None,
    language: str | None = None,
) -> None:
    """The interactive loop, until end of input, /quit or Ctrl+C at the prompt.

    `language`: the console user's own (None: the locale's, `bot.i18n.locale_language`); the
    console chat's /lang, when set, speaks instead."""
    own = language or i18n.locale_language()
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    loop = asyncio.get_running_loop()
    reader = LineReader(loop, stdin)
    front = ConsoleFront(service, out, color, own)
    interrupted = asyncio.Event()

    def on_interrupt() -> None:
        if front.generating:
            service.activity.stop(CONSOLE_CHAT.chat_id)
        else:
            interrupted.set()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        await _speak(service, own)
        if banner:
            out.write(banner + "\n")
        out.write(console_banner() + "\n\n")
        while not front.quitting:
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
                reply = await handle_command(front, service, text)
                if reply:
                    out.write(reply + "\n")
                await _speak(service, own)  # /lang may have changed it
                continue
            await front.ask(text)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)

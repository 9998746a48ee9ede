"""How the Telegram bot answers in a chat: flood gates, command answers (through the chat's
outbox, so a handler never waits for Telegram), reply streamers, and the `Front` a command runs
against (rights checked with the Bot API)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegram import Bot, Chat, Message, Update
from telegram.constants import ChatMemberStatus
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes

from bot.chat import Accepted, ChatService, ReplySink
from bot.chat.commands import Access, FrontName
from bot.chat.hearing import HeadedSink, heading, voice_context
from bot.chat.redo import Redo, RedoPlan
from bot.core.chats import ChatRef, is_group_kind
from bot.errors import UserError
from bot.i18n import N_, _
from bot.reading.context import ContextItem
from bot.settings import Settings
from bot.speech import Transcript
from bot.telegram.buttons import ReplyButtons
from bot.telegram.drafts import DraftPolicy
from bot.telegram.flood import FloodGate, FloodGates
from bot.telegram.listening import HeardNote, Sound, listen, sound_of
from bot.telegram.outbox import SINGLY_IN_GROUPS, SINGLY_IN_PRIVATE, Answer, Outbox
from bot.telegram.reading import author_of, message_context
from bot.telegram.streamer import ReplyStreamer
from bot.telegram.switch_button import send_result

log = logging.getLogger(__name__)

HOW_PRIVATE = N_("Just write to me.")
HOW_GROUP = N_(
    "In this group, mention me (@{username}), reply to one of my messages, or use /ask."
)
INTRO = N_("I answer with a local language model running on this server.\n{how}")


@dataclass
class BotDeps:
    """What every callback shares: the application's `bot_data` (typed by `BotContext`)."""

    settings: Settings
    service: ChatService
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    gates: FloodGates = field(default_factory=FloodGates)
    outboxes: dict[int, Outbox] = field(default_factory=dict)
    """The chats with answers waiting or being sent (an outbox leaves once it is empty)."""
    last_admin_alert: float = float("-inf")
    tell_admins: Callable[[Callable[[], str]], Awaitable[None]] | None = None
    """Sends the admins a text made in each one's language (`bot.telegram.handlers` sets it)."""
    drafts: DraftPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.drafts = DraftPolicy(self.settings.stream_mode, self.service.remembered)

    def gate(self, chat_id: int, kind: str) -> FloodGate:
        """The one flood gate of a chat, shared by every reply and answer sent there."""
        interval = (
            self.settings.edit_interval_group if is_group_kind(kind)
            else self.settings.edit_interval_private
        )
        return self.gates.of(chat_id, interval)

    def outbox(self, bot: Bot, chat_id: int, kind: str) -> Outbox:
        """The outbox of a chat's command answers, made when an answer is first posted."""
        box = self.outboxes.get(chat_id)
        if box is None:
            singly = SINGLY_IN_GROUPS if is_group_kind(kind) else SINGLY_IN_PRIVATE
            box = Outbox(bot, chat_id, self.gate(chat_id, kind), singly=singly,
                         spawn=self.spawn, on_idle=lambda done: self._drop_outbox(chat_id, done))
            self.outboxes[chat_id] = box
        return box

    def _drop_outbox(self, chat_id: int, box: Outbox) -> None:
        if self.outboxes.get(chat_id) is box:
            del self.outboxes[chat_id]

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` in the background; `cancel_all` (the bot's stop) cancels it."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def streamer(
        self, bot: Bot, chat_id: int, kind: str, *, reply_to: int | None, thread_id: int | None,
    ) -> ReplyStreamer:
        """A message edited in place (a long job's progress)."""
        gate = self.gate(chat_id, kind)
        return ReplyStreamer(
            bot, chat_id, interval=gate.interval,
            reply_to=reply_to if is_group_kind(kind) else None, thread_id=thread_id, gate=gate,
            spawn=self.spawn,
        )

    async def reply_streamer(
        self, bot: Bot, chat_id: int, kind: str, *, reply_to: int | None, thread_id: int | None,
        accepted: Accepted, existing_ids: list[int] | None = None, shown: str | None = None,
    ) -> ReplyStreamer:
        """The streamer of the reply to `accepted`: its buttons, its message ids recorded, a
        live draft where the chat allows one (a reply already shown is edited in place)."""
        gate = self.gate(chat_id, kind)
        drafts = None
        if not existing_ids and await self.drafts.allowed(chat_id, kind):
            drafts = self.drafts
        return ReplyStreamer(
            bot, chat_id, interval=gate.interval,
            reply_to=reply_to if is_group_kind(kind) else None, thread_id=thread_id,
            existing_ids=existing_ids or (), shown=shown, gate=gate,
            on_messages=self.service.conversation.recorder(accepted),
            buttons=ReplyButtons(accepted.turn_id),
            drafts=drafts, spawn=self.spawn,
        )


BotContext = ContextTypes.DEFAULT_TYPE
DEPS_KEY = "alpaca_bot"
AnyApplication = Application[Any, Any, Any, Any, Any, Any]


def deps_of(bot_data: dict[Any, Any]) -> BotDeps:
    """The `BotDeps` kept in an application's `bot_data`."""
    value = bot_data[DEPS_KEY]
    if not isinstance(value, BotDeps):
        raise TypeError(f"bot_data[{DEPS_KEY!r}] is {type(value).__name__}, not BotDeps")
    return value


def chat_ref(chat: Chat, message: Message | None = None) -> ChatRef:
    """The conversation a message belongs to: its chat, or in a forum group its topic."""
    thread = thread_of(message) if message is not None and chat.is_forum else None
    return ChatRef(chat.id, chat.type, chat.title or chat.full_name or chat.username, thread)


def thread_of(message: Message) -> int | None:
    return message.message_thread_id if message.is_topic_message else None


async def respond(context: BotContext, message: Message, text: str) -> None:
    """Answer a command in the same chat and topic, as plain text, through the chat's outbox:
    it goes out in the background, when flood control lets it (merged with the answers that
    piled up meanwhile), and the handler goes on at once."""
    chat = message.chat
    # In groups, quote the command (if it was deleted meanwhile, the answer goes anyway).
    quoted = message.message_id if is_group_kind(chat.type) else None
    deps = deps_of(context.bot_data)
    deps.outbox(context.bot, chat.id, chat.type).post(
        Answer(text, reply_to=quoted, thread_id=thread_of(message))
    )


class TelegramFront:
    """A command's or question's view of the Telegram chat it came from."""

    name: FrontName = "telegram"

    def __init__(
        self, update: Update, context: BotContext, message: Message, chat: Chat
    ) -> None:
        self._update = update
        self._context = context
        self._message = message
        self._chat = chat

    @property
    def deps(self) -> BotDeps:
        return deps_of(self._context.bot_data)

    def intro(self, ref: ChatRef) -> str:
        how = (
            _(HOW_GROUP, username=self._context.bot.username) if ref.is_group
            else _(HOW_PRIVATE)
        )
        return _(INTRO, how=how)

    async def answer(self, text: str) -> None:
        await respond(self._context, self._message, text)

    async def ask(self, text: str, *, context: Sequence[ContextItem] = (),
                  heard: HeardNote | None = None) -> None:
        """Store the question with what it brings along (`context`, and the message it
        replies to, read by `bot.telegram.reading`), then answer it in the background. A
        message replying to a voice note asks about what it says (heard first); `heard`: the
        question was heard, its reply begins with what was (in the message showing it)."""
        message, chat, user = self._message, self._chat, self._update.effective_user
        if heard is None and (sound := sound_of(message.reply_to_message)) is not None:
            self.hear_and_ask(sound, about=text, of=message.reply_to_message)
            return
        speaker = None
        if is_group_kind(chat.type):
            speaker = (user.full_name if user else None) or (
                message.sender_chat.title if message.sender_chat else None
            ) or "someone"
        ref = chat_ref(chat, message)
        try:
            replied = await message_context(
                self._context.bot, self.deps.service.reading, ref, message,
                max_chars=self.deps.settings.max_input_chars)
            if any(item.kind == "reply" and item.text.strip() == text.strip()
                   for item in replied):
                text = ""  # a bare /ask: the replied message is the question, given once
            accepted = await self.deps.service.conversation.accept(
                ref, text, speaker=speaker,
                user_id=user.id if user else None,
                message_id=message.message_id, thread_id=thread_of(message),
                context=[*replied, *context],
                heard_from=heard.kind if heard else None,
                heard_seconds=heard.seconds if heard else None,
            )
        except UserError as exc:
            if heard is not None:
                await heard.status.finish(heard.heading, str(exc))
            else:
                await self.answer(str(exc))
            return
        # A heard question's message shows what was heard; its reply goes on in it.
        shown = heard.heading if heard else None
        ids = list(await heard.status.finish(heard.heading)) if heard else None
        streamer = await self.deps.reply_streamer(
            self._context.bot, chat.id, chat.type, reply_to=message.message_id,
            thread_id=thread_of(message), accepted=accepted, existing_ids=ids, shown=shown,
        )
        self.deps.spawn(write_reply(self.deps.service, accepted, streamer, heading=shown),
                        f"answer chat {chat.id} turn {accepted.turn_id}")

    def hear_and_ask(self, sound: Sound, *, about: str = "", of: Message | None = None) -> None:
        """Hear `sound` in the background, then ask what it says (the sender's own note), or
        `about` it (a caption, or a message replying to `of`: the note's transcript, with
        whose it is, comes along)."""
        self.deps.spawn(self._hear_then_ask(sound, about, of),
                        f"hear chat {self._chat.id} message {self._message.message_id}")

    async def _hear_then_ask(self, sound: Sound, about: str, of: Message | None) -> None:
        status = self.progress()
        transcript = await self._listen(sound, status)
        if transcript is None:
            return
        note = HeardNote(sound.kind, transcript.seconds, heading(transcript.text), status)
        if of is None and not about.strip():
            await self.ask(transcript.text, heard=note)
            return
        author = author_of(of, self._context.bot.id)[0] if of is not None else (
            self._update.effective_user.full_name if self._update.effective_user else None)
        await self.ask(about, context=[voice_context(transcript.text, author or None)],
                       heard=note)

    async def _listen(self, sound: Sound, status: ReplyStreamer) -> Transcript | None:
        """What `sound` says, heard in this conversation's turn (None: `status` says why)."""
        chat, user, service = self._chat, self._update.effective_user, self.deps.service
        conversation = await service.conversation.conversation_id(chat_ref(chat, self._message))
        return await listen(service, self._context.bot, sound, status,
                            chat_key=str(conversation), share=str(chat.id),
                            hint=user.language_code if user else None, alert=self._alert)

    async def _alert(self, error: str) -> None:
        if self.deps.tell_admins is not None:
            await self.deps.tell_admins(lambda: _(
                "⚠️ Voice notes cannot be heard: {error}", error=error)[:1000])

    async def hear(self, argument: str) -> str | None:
        """/transcribe: what the voice note, audio file or round video it replies to says,
        for everyone here (heard in the background)."""
        sound = sound_of(self._message.reply_to_message)
        if sound is None:
            return _("Reply to a voice note, an audio file or a round video with /transcribe.")

        async def transcribe() -> None:
            status = self.progress()
            transcript = await self._listen(sound, status)
            if transcript is not None:
                await status.finish(heading(transcript.text))

        self.deps.spawn(transcribe(), f"transcribe in chat {self._chat.id}")
        return None

    async def redo(self, plan: RedoPlan) -> None:
        """Write a stored reply again in its own messages, in the background (a heard
        question's still begins with what was heard)."""
        chat = self._chat
        shown = await self.deps.service.hearing.heading_for(plan.accepted.turn_id)
        streamer = await self.deps.reply_streamer(
            self._context.bot, chat.id, chat.type, reply_to=plan.reply_to,
            thread_id=plan.thread_id, accepted=plan.accepted, existing_ids=plan.message_ids,
            shown=f"{shown}\n\n{plan.shown}" if shown else plan.shown,
        )
        self.deps.spawn(write_reply(self.deps.service, plan.accepted, streamer, redo=plan.redo,
                                    heading=shown),
                        f"{plan.redo} chat {chat.id} turn {plan.accepted.turn_id}")
        # Let it start: it marks the chat busy at once, so a second press (handled next, in
        # order) is refused instead of writing the reply a second time.
        await asyncio.sleep(0)

    async def later(self, first: str, work: Callable[[], Awaitable[str]]) -> None:
        await self.answer(first)

        async def run() -> None:
            await self.answer(await work())

        self.deps.spawn(run(), f"background work for chat {self._chat.id}")

    def progress(self) -> ReplyStreamer:
        return self.deps.streamer(
            self._context.bot, self._chat.id, self._chat.type,
            reply_to=self._message.message_id, thread_id=thread_of(self._message),
        )

    def quit(self) -> None:  # not a Telegram command
        raise NotImplementedError

    async def read(self, argument: str) -> str | None:  # the console's /read: files come sent
        raise NotImplementedError

    async def present(self, text: str, *, photo: Path | None = None,
                      switch_to: str | None = None) -> None:
        """A photo (or a message) with a "Switch to …" button (`bot.telegram.switch_button`)."""
        chat, message = self._chat, self._message
        await send_result(
            self._context.bot, self.deps.gate(chat.id, chat.type), chat.id, text, photo=photo,
            switch_to=switch_to, reply_to=message.message_id if is_group_kind(chat.type) else None,
            thread_id=thread_of(message),
        )

    async def allowed(self, access: Access) -> bool:
        """The table's access rule, checked for the sender of this update."""
        user, chat = self._update.effective_user, self._chat
        admins = self.deps.settings.admins
        if access == "bot_admins":
            return user is not None and user.id in admins
        if access == "anyone" or not is_group_kind(chat.type):
            return True
        sender = self._message.sender_chat
        if sender is not None and sender.id == chat.id:
            return True  # an anonymous admin of the group
        if user is None:
            return False
        if user.id in admins:
            return True
        try:
            member = await self._context.bot.get_chat_member(chat.id, user.id)
        except TelegramError as exc:
            log.warning("cannot check admin rights in chat %s: %s", chat.id, exc)
            return False
        return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


async def write_reply(
    service: ChatService, accepted: Accepted, streamer: ReplyStreamer, *, redo: Redo | None = None,
    heading: str | None = None,
) -> None:
    """Show the bot typing, then write the reply to `accepted` (with `redo`: write its stored
    reply again; a `heading`: what a heard question was heard as, above the reply)."""
    await streamer.typing()
    sink: ReplySink = HeadedSink(streamer, heading) if heading else streamer
    if redo is None:
        await service.conversation.write_reply(accepted, sink)
    else:
        await service.redo.write_again(accepted, sink, redo)

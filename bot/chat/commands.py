"""The table of chat commands: name, help line, who may run it in groups, what it calls.

Telegram and the console both dispatch from `COMMANDS`; `/help` and the bot's command menu are
generated from it. A knob of `bot.core.knobs` becomes a command here without a line of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from bot.chat import access_commands, quantize_commands
from bot.chat.languages import AUTO
from bot.core.chats import ChatRef
from bot.core.knobs import KNOBS, Knob
from bot.errors import ModelError, QuantizeError, UserError
from bot.i18n import N_, _, languages
from bot.reading.context import ContextItem

if TYPE_CHECKING:
    from bot.chat.redo import Redo, RedoPlan
    from bot.chat.service import ChatService
    from bot.chat.sink import ReplySink

Access = Literal["anyone", "chat_admins", "bot_admins"]
"""Who may run a command: everyone; in groups, the group's admins (and the bot's); only the
bot's configured admins, anywhere."""
FrontName = Literal["telegram", "console"]
BOTH: tuple[FrontName, ...] = ("telegram", "console")


@dataclass(frozen=True, kw_only=True)
class Invocation:
    """One command as typed: where, the text after the command, and by whom."""

    ref: ChatRef
    argument: str
    replied_text: str = ""
    """The text of the message the command replies to (Telegram), else empty."""
    replied_sound: bool = False
    """The command replies to a voice note, an audio file or a round video (Telegram): /ask
    is then about what it says."""
    user_id: int | None = None
    own_language: str | None = None
    """The language of the person who typed it (Telegram's `language_code`, the console's
    locale), for what /lang auto answers in; None: the language being spoken."""


class Front(Protocol):
    """What a front end lends the commands it runs."""

    @property
    def name(self) -> FrontName: ...

    async def ask(self, text: str, *, context: Sequence[ContextItem] = ()) -> None:
        """Store `text` as a question, with what it brings along, and answer it (in the
        background where the front can)."""
        ...

    async def read(self, argument: str) -> str | None:
        """/read FILE [QUESTION] (the console): read a document or a picture, and ask."""
        ...

    async def hear(self, argument: str) -> str | None:
        """Transcribe audio: Telegram's /transcribe, the voice note or audio file it replies
        to (the transcript alone); the console's /listen FILE, the file, then answered.
        Returns a line to answer at once, if any."""
        ...

    async def later(self, first: str, work: Callable[[], Awaitable[str]]) -> None:
        """Answer `first` now and the text `work` returns when it is done."""
        ...

    def progress(self) -> ReplySink:
        """A message that shows a long job's progress (Telegram: edited in place)."""
        ...

    def quit(self) -> None: ...

    def intro(self, ref: ChatRef) -> str:
        """The first lines of /help: how to talk to the bot here."""
        ...

    async def redo(self, plan: RedoPlan) -> None:
        """Write a stored reply again where it is shown (in the background where it can)."""
        ...

    async def allowed(self, access: Access) -> bool:
        """Whether the person running the command passes this access rule here."""
        ...

    async def present(self, text: str, *, photo: Path | None = None,
                      switch_to: str | None = None) -> None:
        """Show a result: `text` (a picture's caption with `photo`), and a way to switch the
        running model to `switch_to` as `/model NAME` does (Telegram: a button)."""
        ...


Operation = Callable[["ChatService", Front, Invocation], Awaitable[str | None]]


@dataclass(frozen=True, kw_only=True)
class Command:
    """One chat command."""

    name: str
    help: str
    """Marked `N_` in the table: translated where /help and the menu show it."""
    run: Operation
    args: str = ""
    aliases: tuple[str, ...] = ()
    access: Access = "anyone"
    guard_reading: bool = True
    """False: anyone may run it without an argument (show a value); the access rule applies to
    changing it."""
    denied: str = ""
    """Marked `N_` in the table: translated where `dispatch` answers it."""
    fronts: tuple[FrontName, ...] = BOTH
    menu: bool = True
    """Listed in the bot's command menu (`setMyCommands`) and the body of /help."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def needs_rights(self, call: Invocation) -> bool:
        return self.access != "anyone" and (self.guard_reading or bool(call.argument.strip()))

    @property
    def usage(self) -> str:
        return f"/{self.name}{' ' + self.args if self.args else ''}"


# -- the operations -----------------------------------------------------------------------------


def _knob_operation(knob: Knob) -> Operation:
    async def run(chat: ChatService, front: Front, call: Invocation) -> str:
        if call.argument:
            return await chat.chat_settings.change(call.ref, knob, call.argument)
        return await chat.chat_settings.show(call.ref, knob)

    return run


async def _ask(chat: ChatService, front: Front, call: Invocation) -> str | None:
    text = call.argument or call.replied_text
    if not text.strip() and not call.replied_sound:
        return _("Usage: /ask TEXT — ask me a question.")
    await front.ask(text)
    return None


async def _system(chat: ChatService, front: Front, call: Invocation) -> str:
    if call.argument:
        return await chat.chat_settings.set_system(call.ref, call.argument)
    return await chat.chat_settings.show_system(call.ref)


async def _summary(chat: ChatService, front: Front, call: Invocation) -> str:
    if call.argument:
        return await chat.chat_settings.set_summary(call.ref, call.argument)
    return await chat.chat_settings.show_summary(call.ref)


async def _lang(chat: ChatService, front: Front, call: Invocation) -> str:
    if call.argument:
        return await chat.languages.change(call.ref, call.argument, own=call.own_language)
    return await chat.languages.show(call.ref)


async def _reset(chat: ChatService, front: Front, call: Invocation) -> str:
    return await chat.chat_settings.reset(call.ref)


async def _forget(chat: ChatService, front: Front, call: Invocation) -> str:
    return await chat.forgetting.request(call.ref, call.argument)


async def _settings(chat: ChatService, front: Front, call: Invocation) -> str:
    return await chat.overview.text(call.ref, servers=await front.allowed("bot_admins"))


async def _stop(chat: ChatService, front: Front, call: Invocation) -> str | None:
    """Stops the replies its sender asked for; a group's admins and the bot's stop them all."""
    conversation_id = await chat.conversation.conversation_id(call.ref)
    if not chat.activity.busy(conversation_id):
        return _("Nothing to stop: no reply is being written here.")
    if await front.allowed("chat_admins"):  # anyone outside groups
        stopped = chat.activity.stop(conversation_id)
    else:
        stopped = chat.activity.stop_asked_by(conversation_id, call.user_id)
    if stopped:
        return None  # the stopped replies say so themselves
    return _(NOTHING_OF_YOURS)


async def _retry(chat: ChatService, front: Front, call: Invocation) -> str | None:
    return await _redo(chat, front, call, "regenerate")


async def _continue(chat: ChatService, front: Front, call: Invocation) -> str | None:
    return await _redo(chat, front, call, "continue")


async def _redo(chat: ChatService, front: Front, call: Invocation, redo: Redo) -> str | None:
    conversation_id = await chat.conversation.conversation_id(call.ref)
    plan = await chat.redo.for_last(conversation_id, redo)  # UserError: why not
    if plan.asker != call.user_id and not await front.allowed("chat_admins"):
        return _(NOT_YOUR_REPLY)
    await front.redo(plan)
    return None  # the reply is written again where it stands


async def _help(chat: ChatService, front: Front, call: Invocation) -> str:
    return help_text(front.name, front.intro(call.ref), group=call.ref.is_group)


async def _model(chat: ChatService, front: Front, call: Invocation) -> str | None:
    switch = chat.model_switch
    if switch is None:
        return _("Switching models is not available here.")
    if not call.argument:
        return await switch.listing()
    name = call.argument
    await front.later(_("Switching to {name}: replies in progress finish first…", name=name),
                      lambda: _switch(chat, name))
    return None


async def _switch(chat: ChatService, name: str) -> str:
    assert chat.model_switch is not None
    try:
        return await chat.model_switch.switch(name)
    except UserError as exc:
        return str(exc)


async def _quit(chat: ChatService, front: Front, call: Invocation) -> None:
    front.quit()


async def _docs(chat: ChatService, front: Front, call: Invocation) -> str:
    return await chat.documents.listing(call.ref)


async def _transcribe(chat: ChatService, front: Front, call: Invocation) -> str | None:
    return await front.hear(call.argument)


async def _listen(chat: ChatService, front: Front, call: Invocation) -> str | None:
    if not call.argument.strip():
        return _("Usage: /listen FILE — hear an audio file (a voice note, MP3, ...), then "
                 "answer it.")
    return await front.hear(call.argument)


async def _read(chat: ChatService, front: Front, call: Invocation) -> str | None:
    if not call.argument.strip():
        return _("Usage: /read FILE [QUESTION] — read a document or a picture, then ask.")
    return await front.read(call.argument)


CHANGE_SETTINGS = N_("Only the group's admins can change settings.")
NOTHING_OF_YOURS = N_(
    "None of the replies being written here is yours: only the group's admins can stop "
    "other people's."
)
MANAGE_ACCESS = N_("Only the bot's admins can allow and deny access.")
NOT_YOUR_REPLY = N_(
    "Only the person who asked, or the group's admins, can have that reply redone."
)

COMMANDS: tuple[Command, ...] = (
    Command(name="ask", args="TEXT", help=N_("ask a question"), run=_ask),
    *(
        Command(name=knob.command, args=knob.args, help=knob.menu_line, run=_knob_operation(knob),
                access="chat_admins", guard_reading=False, denied=CHANGE_SETTINGS)
        for knob in KNOBS
    ),
    Command(name="system", args="[TEXT|default]", help=N_("system prompt"), run=_system,
            access="chat_admins", guard_reading=False,
            denied=N_("Only the group's admins can change the system prompt.")),
    Command(name="summary", args="[on|off]", help=N_("the summary of older messages"),
            run=_summary,
            access="chat_admins", guard_reading=False,
            denied=N_("Only the group's admins can turn the summary on or off.")),
    Command(name="lang", args=f"[{'|'.join((AUTO, *languages()))}]",
            help=N_("the language I answer in"), run=_lang,
            access="chat_admins", guard_reading=False,
            denied=N_("Only the group's admins can change the language.")),
    Command(name="reset", help=N_("start a fresh conversation"), run=_reset, access="chat_admins",
            denied=N_("Only the group's admins can reset the conversation.")),
    Command(name="forget", args="[yes]", help=N_("delete this chat's stored messages"),
            run=_forget, access="chat_admins",
            denied=N_("Only the group's admins can make me forget this chat.")),
    Command(name="settings", help=N_("all values and how full the context is"), run=_settings),
    Command(name="stop", help=N_("stop the reply being written"), run=_stop),
    Command(name="retry", help=N_("write the last reply again"), run=_retry),
    Command(name="continue", help=N_("go on with the last reply (cut off at /n)"), run=_continue),
    Command(name="help", aliases=("start",), help=N_("how to use this bot"), run=_help),
    Command(name="model", args="[NAME]", help=N_("lists or switches models"), run=_model,
            access="bot_admins", denied=N_("Only the bot's admins can list and switch models."),
            menu=False),
    Command(name="quantize", args="[TYPE|auto|cancel] [FILE]", help=N_("makes a 4-bit model"),
            run=quantize_commands.quantize,
            access="bot_admins", denied=N_("Only the bot's admins can quantize models."),
            fronts=("telegram",), menu=False),
    Command(name="usage", help=N_("your use of the bot and your limits"),
            run=access_commands.usage),
    Command(name="allow", args="ID", help=N_("lets a user or a group use the bot"),
            run=access_commands.allow, access="bot_admins", denied=MANAGE_ACCESS, menu=False),
    Command(name="deny", args="ID", help=N_("takes access away (from a group: the bot leaves)"),
            run=access_commands.deny, access="bot_admins", denied=MANAGE_ACCESS, menu=False),
    Command(name="access", help=N_("who may use the bot, and who asked"),
            run=access_commands.access, access="bot_admins", denied=MANAGE_ACCESS, menu=False),
    Command(name="stats", help=N_("the top users and chats by use"), run=access_commands.stats,
            access="bot_admins", denied=N_("Only the bot's admins can see the statistics."),
            menu=False),
    Command(name="docs", help=N_("the documents I read in this chat"), run=_docs),
    Command(name="transcribe", help=N_("what a voice note says (reply to it with this)"),
            run=_transcribe, fronts=("telegram",)),
    Command(name="listen", args="FILE", help=N_("hear an audio file, then answer it"),
            run=_listen, fronts=("console",), menu=False),
    Command(name="read", args="FILE [QUESTION]", help=N_("read a document or a picture"),
            run=_read, fronts=("console",), menu=False),
    Command(name="quit", aliases=("exit",), help=N_("leave the console chat"), run=_quit,
            fronts=("console",), menu=False),
)
BY_NAME: dict[str, Command] = {name: command for command in COMMANDS for name in command.names}


def commands_for(front: FrontName) -> list[Command]:
    return [command for command in COMMANDS if front in command.fronts]


def menu() -> list[tuple[str, str]]:
    """The bot's command menu (`setMyCommands`): name and description."""
    return [
        (command.name, _(command.help)) for command in commands_for("telegram") if command.menu
    ]


def help_text(front: FrontName, intro: str, *, group: bool) -> str:
    """/help, from the table: how to talk here, every command, who may change what."""
    shown = commands_for(front)
    lines = [intro, "", _("Commands (as llama.cpp's flags, per chat):")]
    lines += [f"{c.usage} — {_(c.help)}" for c in shown if c.access != "bot_admins" and c.menu]
    lines += [
        f"{c.usage} — {_(c.help)}" for c in shown if c.access != "bot_admins" and not c.menu
    ]
    lines.append(_("Without a value a command shows the current value and its range."))
    if group:
        lines.append(_("In groups, only admins may change settings, /system, /reset and /forget."))
    admin = [f"{c.usage} {_(c.help)}" for c in shown if c.access == "bot_admins"]
    between = _(", ")  # the separator of a list in a sentence (Chinese: "；")
    if admin and front == "telegram":
        lines.append(_("Bot admins: {commands}.", commands=between.join(admin)))
    elif admin:
        lines.append(_("Also: {commands}.", commands=between.join(admin)))
    return "\n".join(lines)


Permission = Callable[[Access], Awaitable[bool]]


async def dispatch(
    chat: ChatService, front: Front, name: str, call: Invocation, *, allowed: Permission
) -> str | None:
    """Run command `name` for `front`; returns the text to answer (None: nothing to say).

    Raises KeyError for a command this front does not know; `allowed` decides the access rule.
    """
    command = BY_NAME.get(name.lower())
    if command is None or front.name not in command.fronts:
        raise KeyError(name)
    if command.needs_rights(call) and not await allowed(command.access):
        return _(command.denied) if command.denied else command.denied  # _(""): the header
    try:
        return await command.run(chat, front, call)
    except (UserError, QuantizeError, ModelError) as exc:
        return str(exc)

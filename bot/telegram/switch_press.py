"""What a press of "Switch to …" (`switch_button`) does: exactly `/model NAME`, run as the
person who pressed, with that command's access rule.

A press is answered at once (the client shows a spinner until then); the switch itself answers
in the chat as `/model` does.
"""

from __future__ import annotations

from telegram import Message, Update

from bot.chat.commands import Invocation, dispatch
from bot.i18n import _
from bot.telegram.front import BotContext, TelegramFront, chat_ref, deps_of
from bot.telegram.presses import DEAD, answer_press
from bot.telegram.switch_button import PREFIX


async def on_switch_press(update: Update, context: BotContext) -> None:
    """A press of "Switch to …": `/model NAME` as the presser."""
    query = update.callback_query
    if query is None:
        return
    message = query.message
    data = query.data or ""
    if not isinstance(message, Message) or not data.startswith(PREFIX):
        await answer_press(query, _(DEAD))
        return
    name = data[len(PREFIX):]
    front = TelegramFront(update, context, message, message.chat)
    call = Invocation(ref=chat_ref(message.chat, message), argument=name,
                      user_id=query.from_user.id)
    text = await dispatch(deps_of(context.bot_data).service, front, "model", call,
                          allowed=front.allowed)
    # No text: the switch started and answers in the chat; a text is why it did not.
    await answer_press(query, text or _("Switching to {name}…", name=name), alert=bool(text))

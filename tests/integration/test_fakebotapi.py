"""The loopback Bot API fake, driven by a real python-telegram-bot Bot/Application and raw httpx."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from telegram import Bot, BotCommand, ReplyParameters, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter
from telegram.ext import AIORateLimiter, ApplicationBuilder, CommandHandler, MessageHandler, filters

from tests.fakebotapi import FakeBotAPI

pytestmark = [
    pytest.mark.timeout(60),
    # PTB itself reads RetryAfter.retry_after (AIORateLimiter, str()); its int->timedelta notice
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


def make_bot(fake: FakeBotAPI, token: str | None = None) -> Bot:
    return Bot(
        token or fake.token,
        base_url=f"{fake.base_url}/bot",
        base_file_url=f"{fake.base_url}/file/bot",
    )


@pytest.fixture
async def bot(fake: FakeBotAPI) -> AsyncIterator[Bot]:
    async with make_bot(fake) as client:
        yield client


@pytest.fixture
def alice(fake: FakeBotAPI) -> dict:
    return fake.user("Alice", "alice_w")


def retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB's int -> timedelta migration warning
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else value


async def test_get_me(bot: Bot, fake: FakeBotAPI) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (fake.bot_id, "alpaca_test_bot", True)
    assert me.can_join_groups


async def test_unknown_token_and_unknown_method(fake: FakeBotAPI) -> None:
    with pytest.raises(InvalidToken):
        await make_bot(fake, "1:wrong").get_me()
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        response = await http.post(f"/bot{fake.token}/noSuchMethod")
        assert response.status_code == 404
        assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        response = await http.get(f"/bot{fake.token}/getMe")  # GET works too
        assert response.json()["result"]["username"] == fake.bot_username


async def test_json_and_form_bodies(fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    async with httpx.AsyncClient(base_url=f"{fake.base_url}/bot{fake.token}") as http:
        sent = (await http.post("/sendMessage", json={"chat_id": chat["id"], "text": "123"})).json()
        assert sent["ok"] and sent["result"]["text"] == "123"  # strings stay strings
        reply = {"message_id": 99, "allow_sending_without_reply": True}
        form = {"chat_id": str(chat["id"]), "text": "hi", "reply_parameters": json.dumps(reply)}
        sent = (await http.post("/sendMessage", data=form)).json()
        assert sent["ok"] and "reply_to_message" not in sent["result"]
        multipart = await http.post(
            "/sendMessage",
            data={"chat_id": str(chat["id"]), "text": "via multipart"},
            files={"document": ("a.txt", b"abc")},
        )
        assert multipart.json()["result"]["text"] == "via multipart"
        failed = (await http.post("/sendMessage", data={"chat_id": "42", "text": "x"})).json()
        assert failed == {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: chat not found",
        }
    requests = fake.requests("sendMessage")
    assert requests[1].params["reply_parameters"] == reply
    assert requests[2].params["document"] == {"filename": "a.txt", "size": 3}


async def test_send_edit_and_not_modified(bot: Bot, fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    incoming = fake.send_text(chat, alice, "hello")
    sent = await bot.send_message(
        chat["id"], "Thinking", reply_parameters=ReplyParameters(incoming["message_id"])
    )
    assert sent.message_id == incoming["message_id"] + 1  # one counter per chat
    assert sent.reply_to_message.from_user.id == alice["id"]
    await bot.edit_message_text("Thinking harder", chat_id=chat["id"], message_id=sent.message_id)
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_text(
            "Thinking harder", chat_id=chat["id"], message_id=sent.message_id
        )
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=chat["id"], message_id=999)
    with pytest.raises(BadRequest, match="(?i)message can't be edited"):
        await bot.edit_message_text("x", chat_id=chat["id"], message_id=incoming["message_id"])

    [mine] = fake.bot_messages(chat)
    assert (mine.text, mine.edit_count, mine.history) == ("Thinking harder", 1, ["Thinking"])
    assert mine.reply_to_message_id == incoming["message_id"]
    assert [m.from_bot for m in fake.messages(chat)] == [False, True]

    await bot.delete_message(chat["id"], sent.message_id)
    assert fake.bot_messages(chat) == []
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await bot.delete_message(chat["id"], sent.message_id)


async def test_reply_to_missing_message(bot: Bot, fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    with pytest.raises(BadRequest, match="(?i)message to be replied not found"):
        await bot.send_message(chat["id"], "x", reply_parameters=ReplyParameters(message_id=77))
    sent = await bot.send_message(
        chat["id"],
        "x",
        reply_parameters=ReplyParameters(message_id=77, allow_sending_without_reply=True),
    )
    assert sent.reply_to_message is None
    with pytest.raises(BadRequest, match="(?i)chat not found"):
        await bot.send_message(-100555, "x")


async def test_html_is_parsed_into_text_and_utf16_entities(
    bot: Bot, fake: FakeBotAPI, alice: dict
) -> None:
    chat = fake.private_chat(alice)
    html = (
        '🦙 <b>bold <i>both</i></b> &lt;tag&gt; &amp; &#955;\n<pre><code class="language-python">x = 1</code></pre>'
        '<a href="https://e.org/?a=1&amp;b=2">link</a> <tg-spoiler>s</tg-spoiler> '
        "<blockquote expandable>quote</blockquote>"
    )
    await bot.send_message(chat["id"], html, parse_mode=ParseMode.HTML)
    [message] = fake.bot_messages(chat)
    assert message.text == "🦙 bold both <tag> & λ\nx = 1link s quote"
    assert message.parse_mode == "HTML"
    assert message.entities == [
        {"type": "bold", "offset": 3, "length": 9},
        {"type": "italic", "offset": 8, "length": 4},
        {"type": "pre", "language": "python", "offset": 23, "length": 5},
        {"type": "text_link", "url": "https://e.org/?a=1&b=2", "offset": 28, "length": 4},
        {"type": "spoiler", "offset": 33, "length": 1},
        {"type": "expandable_blockquote", "offset": 35, "length": 5},
    ]


@pytest.mark.parametrize(
    "html",
    [
        "<b>open",
        "<b>x</i>",
        "x</b>",
        "<p>x</p>",
        "1 < 2",
        "&foo;",
        "<span>x</span>",
        "<b class='x'",
        "<br>",
    ],
)
async def test_malformed_html_is_rejected(
    bot: Bot, fake: FakeBotAPI, alice: dict, html: str
) -> None:
    chat = fake.private_chat(alice)
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message(chat["id"], html, parse_mode=ParseMode.HTML)
    assert fake.bot_messages(chat) == []


async def test_markdown_v2(bot: Bot, fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    with pytest.raises(BadRequest, match="(?i)can't parse entities.*reserved"):
        await bot.send_message(chat["id"], "Done!", parse_mode=ParseMode.MARKDOWN_V2)
    with pytest.raises(BadRequest, match="(?i)can't find end of the entity"):
        await bot.send_message(chat["id"], "*half", parse_mode=ParseMode.MARKDOWN_V2)
    await bot.send_message(chat["id"], r"*Done* \- `x` \!", parse_mode=ParseMode.MARKDOWN_V2)
    [message] = fake.bot_messages(chat)
    assert message.text == "Done - x !"
    assert message.entities == [
        {"type": "bold", "offset": 0, "length": 4},
        {"type": "code", "offset": 7, "length": 1},
    ]
    await bot.send_message(chat["id"], "plain <b> stays & is kept!")
    assert fake.bot_messages(chat)[-1].text == "plain <b> stays & is kept!"


async def test_length_and_emptiness(bot: Bot, fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    await bot.send_message(chat["id"], "a" * 4096)
    # the limit applies after parsing: tags don't count
    await bot.send_message(chat["id"], f"<b>{'a' * 4096}</b>", parse_mode=ParseMode.HTML)
    await bot.send_message(chat["id"], "😀" * 2048)  # 4096 UTF-16 units
    for text in ("a" * 4097, "😀" * 4096, "😀" * 2048 + "a"):
        with pytest.raises(BadRequest, match="(?i)message is too long"):
            await bot.send_message(chat["id"], text)
    for text in ("", "  \n ", "<b> </b>"):
        with pytest.raises(BadRequest, match="(?i)message text is empty"):
            await bot.send_message(chat["id"], text, parse_mode=ParseMode.HTML)
    await bot.send_message(chat["id"], "  trimmed\n\n")
    assert fake.bot_messages(chat)[-1].text == "trimmed"


async def test_injected_failures(bot: Bot, fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    fake.fail_next("sendMessage", retry_after=3)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(chat["id"], "x")
    assert retry_seconds(caught.value) == 3
    assert fake.violations() == []
    with pytest.raises(RetryAfter):  # still banned: the fake answers 429 and records it
        await bot.send_chat_action(chat["id"], "typing")
    [violation] = fake.violations()
    assert violation.request.method == "sendChatAction" and 2 < violation.early_by <= 3

    other = fake.private_chat(fake.user("Bob"))
    fake.fail_next("sendMessage", error_code=403, chat_id=other)
    with pytest.raises(Forbidden, match="blocked"):
        await bot.send_message(other["id"], "x")
    await bot.send_message(other["id"], "works again")
    assert [r.status for r in fake.requests("sendMessage")] == [429, 403, 200]


async def test_flood_control_with_ptb_rate_limiter(fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    fake.flood_control(min_interval_per_chat=1.0)
    app = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(f"{fake.base_url}/bot")
        .base_file_url(f"{fake.base_url}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=2))
        .build()
    )
    async with app:
        started = time.monotonic()
        await app.bot.send_message(chat["id"], "one")
        await app.bot.send_message(chat["id"], "two")  # 429 retry_after=1, retried by the limiter
        assert time.monotonic() - started >= 1.0
    assert [m.text for m in fake.bot_messages(chat)] == ["one", "two"]
    assert [r.status for r in fake.requests("sendMessage")] == [200, 429, 200]
    assert fake.violations() == []


async def test_long_poll_wakes_up_on_update(fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    async with httpx.AsyncClient(base_url=f"{fake.base_url}/bot{fake.token}", timeout=15) as http:
        started = time.monotonic()
        empty = (await http.post("/getUpdates", data={"timeout": "1"})).json()
        assert empty == {"ok": True, "result": []} and 0.9 < time.monotonic() - started < 3

        poll = asyncio.create_task(http.post("/getUpdates", data={"timeout": "10"}))
        await asyncio.sleep(0.2)
        assert not poll.done()
        started = time.monotonic()
        fake.send_text(chat, alice, "wake up")
        [update] = (await poll).json()["result"]
        assert time.monotonic() - started < 1
        assert update["message"]["text"] == "wake up"

        # confirming by offset drops the update for good
        confirm = await http.post("/getUpdates", data={"offset": str(update["update_id"] + 1)})
        assert confirm.json()["result"] == []
        assert fake.pending_updates() == []


def test_stop_unblocks_a_long_poll() -> None:
    fake = FakeBotAPI().start()
    results: list[object] = []

    def poll() -> None:
        try:
            results.append(
                httpx.post(
                    f"{fake.base_url}/bot{fake.token}/getUpdates", data={"timeout": "30"}
                ).json()
            )
        except httpx.HTTPError as exc:
            results.append(exc)

    thread = threading.Thread(target=poll)
    thread.start()
    fake.wait_until(lambda: fake.requests("getUpdates"), timeout=5)
    started = time.monotonic()
    fake.stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 3
    assert results


async def test_chats_members_and_commands(bot: Bot, fake: FakeBotAPI, alice: dict) -> None:
    bob = fake.user("Bob", "bob_b")
    group = fake.group_chat("Llamas")
    fake.set_admins(group, [alice["id"], fake.bot_id], creator=bob["id"])
    carol = fake.user("Carol")
    assert (await bot.get_chat_member(group["id"], alice["id"])).status == "administrator"
    assert (await bot.get_chat_member(group["id"], bob["id"])).status == "creator"
    assert (await bot.get_chat_member(group["id"], carol["id"])).status == "left"
    fake.send_text(group, carol, "hi")
    assert (await bot.get_chat_member(group["id"], carol["id"])).status == "member"
    admins = await bot.get_chat_administrators(group["id"])
    assert [m.user.id for m in admins] == [bob["id"], alice["id"], fake.bot_id]
    info = await bot.get_chat(group["id"])
    assert (info.title, info.type) == ("Llamas", "supergroup")

    await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("reset", "Forget")])
    assert [c.command for c in await bot.get_my_commands()] == ["start", "reset"]
    await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()

    private = fake.private_chat(alice)
    assert await bot.send_message_draft(private["id"], draft_id=7, text="Thin")
    assert fake.drafts(private) == [(7, "Thin")]
    with pytest.raises(BadRequest, match="(?i)textdraft_peer_invalid"):
        await bot.send_message_draft(group["id"], draft_id=7, text="Thin")


async def test_drafts_follow_telegram_s_rules(bot: Bot, fake: FakeBotAPI, alice: dict) -> None:
    private = fake.private_chat(alice)
    with pytest.raises(BadRequest, match="(?i)draft_id must be non-zero"):
        await bot.send_message_draft(private["id"], draft_id=0, text="x")
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message_draft(private["id"], draft_id=1, text="x" * 4097)
    # 4096 after entities parsing: the tags do not count.
    assert await bot.send_message_draft(private["id"], draft_id=1, text=f"<b>{'x' * 4096}</b>",
                                        parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message_draft(private["id"], draft_id=1, text="<b>x", parse_mode="HTML")
    # Bot API 10.0: an empty text shows "Thinking...".
    assert await bot.send_message_draft(private["id"], draft_id=2, text="")
    assert [draft for draft, _ in fake.drafts(private)] == [1, 2]
    assert fake.bot_messages(private) == []  # a draft is no message


async def test_inline_buttons_presses_and_callback_answers(
    bot: Bot, fake: FakeBotAPI, alice: dict
) -> None:
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup

    private = fake.private_chat(alice)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("🔄 Again", callback_data="r:1"),
                                    InlineKeyboardButton("Site", url="https://example.org")]])
    sent = await bot.send_message(private["id"], "hello", reply_markup=markup)
    [stored] = fake.bot_messages(private)
    assert stored.reply_markup["inline_keyboard"][0][0] == {"text": "🔄 Again", "callback_data": "r:1"}
    with pytest.raises(ValueError, match="no button"):
        fake.press(stored, "Nope", alice)
    query_id = fake.press(stored, "🔄 Again", alice)
    [pending] = fake.pending_updates()
    query = pending["callback_query"]
    assert (query["id"], query["data"], query["from"]["id"]) == (query_id, "r:1", alice["id"])
    assert query["message"]["message_id"] == sent.message_id
    assert query["message"]["reply_markup"] == stored.reply_markup
    with pytest.raises(BadRequest, match="(?i)message_too_long"):
        await bot.answer_callback_query(query_id, "x" * 201)
    assert await bot.answer_callback_query(query_id, "x" * 200)
    assert fake.callback_query(query_id).text == "x" * 200
    with pytest.raises(BadRequest, match="(?i)query is too old"):  # answered twice
        await bot.answer_callback_query(query_id)
    with pytest.raises(BadRequest, match="(?i)query is too old"):  # never sent
        await bot.answer_callback_query("12345")
    fake.callback_timeout = 0.0
    late = fake.press(stored, "🔄 Again", alice)
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(late)
    assert not fake.callback_query(late).answered

    # The markup alone changes; the same markup again is "not modified"; none removes it.
    other = InlineKeyboardMarkup([[InlineKeyboardButton("➡ On", callback_data="c:1")]])
    await bot.edit_message_reply_markup(private["id"], sent.message_id, reply_markup=other)
    [stored] = fake.bot_messages(private)
    assert stored.text == "hello" and stored.edit_count == 0
    assert stored.reply_markup == {"inline_keyboard": [[{"text": "➡ On", "callback_data": "c:1"}]]}
    with pytest.raises(BadRequest, match="(?i)not modified"):
        await bot.edit_message_reply_markup(private["id"], sent.message_id, reply_markup=other)
    await bot.edit_message_reply_markup(private["id"], sent.message_id)
    assert fake.bot_messages(private)[0].reply_markup is None
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_reply_markup(private["id"], 999, reply_markup=other)
    # An edit of the text without reply_markup drops the buttons, as Telegram does.
    await bot.edit_message_reply_markup(private["id"], sent.message_id, reply_markup=other)
    await bot.edit_message_text("hello again", chat_id=private["id"], message_id=sent.message_id)
    assert fake.bot_messages(private)[0].reply_markup is None
    # Callback data: 1-64 bytes.
    too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="é" * 33)]])
    with pytest.raises(BadRequest, match="(?i)button_data_invalid"):
        await bot.send_message(private["id"], "x", reply_markup=too_long)


async def test_incoming_entities_and_threads(bot: Bot, fake: FakeBotAPI, alice: dict) -> None:
    forum = fake.group_chat("Forum", forum=True)
    sent = fake.send_text(forum, alice, "🦙 hey @alpaca_test_bot", thread_id=5)
    update = Update.de_json({"update_id": 1, "message": sent}, bot)
    assert list(update.message.parse_entities().values()) == ["@alpaca_test_bot"]
    assert update.message.is_topic_message and update.message.message_thread_id == 5

    reply = await bot.send_message(
        forum["id"], "answer", reply_parameters=ReplyParameters(sent["message_id"])
    )
    assert reply.message_thread_id == 5  # a reply lands in the replied message's topic
    follow_up = fake.send_text(
        forum, alice, "/start@alpaca_test_bot more", reply_to=reply.message_id
    )
    assert follow_up["entities"] == [{"type": "bot_command", "offset": 0, "length": 22}]
    assert follow_up["reply_to_message"]["from"]["id"] == fake.bot_id
    assert follow_up["message_thread_id"] == 5


async def test_wait_for_reports_chat_state_on_timeout(fake: FakeBotAPI, alice: dict) -> None:
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "anyone there?")
    with pytest.raises(AssertionError, match="(?s)a bot reply.*anyone there"):
        await fake.wait_for(lambda: fake.bot_messages(chat), timeout=0.1, what="a bot reply")


async def test_ptb_application_end_to_end(fake: FakeBotAPI, alice: dict) -> None:
    async def start(update: Update, context: object) -> None:
        await update.message.reply_text("Hello, I am Alpaca")

    async def echo(update: Update, context: object) -> None:
        await update.message.reply_text(f"echo: {update.message.text}", do_quote=False)

    app = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(f"{fake.base_url}/bot")
        .base_file_url(f"{fake.base_url}/file/bot")
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    group = fake.group_chat("Llamas")
    private = fake.private_chat(alice)

    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        command = fake.send_text(group, alice, "/start@alpaca_test_bot")
        fake.send_text(group, alice, "/start@some_other_bot")  # not for us
        fake.send_text(private, alice, "how are you?")
        [greeting] = await fake.wait_for(lambda: fake.bot_messages(group), what="greeting in group")
        [echoed] = await fake.wait_for(lambda: fake.bot_messages(private), what="echo in private")
        await app.updater.stop()
        await app.stop()

    assert (
        greeting.text == "Hello, I am Alpaca"
        and greeting.reply_to_message_id == command["message_id"]
    )
    assert echoed.text == "echo: how are you?" and echoed.reply_to_message_id is None
    assert len(fake.bot_messages(group)) == 1
    assert fake.pending_updates() == []  # the final getUpdates confirmed everything
    assert [r.method for r in fake.requests()][:2] == ["getMe", "deleteWebhook"]
    assert fake.violations() == []

"""A chat with a long history costs what its window costs: preparing a reply and /settings read
only the newest turns and tokenize only prompts near the window's size (SQLite and PostgreSQL,
the scripted engine)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.chat.conversation import Accepted
from bot.core.chats import ChatRef
from bot.core.prompt import Prompt, prompt_text
from bot.engine.base import CancelToken
from bot.ops.runtime import open_runtime
from bot.store import repository as repo
from tests.fakeengine import ScriptedEngine

pytestmark = pytest.mark.timeout(180)

TURNS = 3000
TEXT = "x" * 1000


class MeteredEngine(ScriptedEngine):
    """Counts the characters of every prompt it is asked to tokenize."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenized = 0

    async def count_tokens(self, prompt: Prompt) -> int:
        self.tokenized += len(prompt_text(prompt))
        return await super().count_tokens(prompt)


# Slow by nature: stores a long history and prepares replies and settings against it, counting
# the work each takes; runs on both databases.
async def test_preparing_a_reply_and_settings_follow_the_window(make_settings: Any) -> None:
    engine = MeteredEngine()
    async with open_runtime(make_settings(ctx=2048, n_predict=256), engine=engine) as runtime:
        service = runtime.service
        ref = ChatRef(5, "private", "Long talker")
        async with runtime.sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            for i in range(TURNS // 2):
                question = await repo.add_user_turn(session, chat.id, f"{i} {TEXT}")
                reply = await repo.start_reply(session, question)
                await repo.finish_reply(session, reply, f"{i} {TEXT}", reason="eos", n_tokens=1)
            await session.commit()
        history = TURNS * len(TEXT)
        accepted = await service.conversation.accept(ref, "and now?")
        prepared = await service.conversation.prepare(accepted, CancelToken())
        in_window = len(prepared.window.turns)
        assert 2 <= in_window < 10 and prepared.window.left_out
        assert engine.tokenized < 8 * in_window * len(TEXT) < history // 20
        engine.tokenized = 0
        shown = await service.overview.text(ref)
        # The stored turns, the question, and its reply's row that `prepare` started.
        assert f"of {TURNS + 2} messages in the window" in shown
        assert engine.tokenized < 8 * in_window * len(TEXT)
        assert isinstance(accepted, Accepted)

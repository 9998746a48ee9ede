"""Where replies stream as live drafts (`sendMessageDraft`): the configured `stream_mode`,
Telegram's rule (private chats only) and the chats where Telegram refused one, remembered
across restarts."""

from __future__ import annotations

import logging
from typing import Literal

from bot.chat.remembered import Remembered

log = logging.getLogger(__name__)

REFUSED = "drafts_refused"
"""The fact `Remembered` keeps for a chat where Telegram refused a draft."""
StreamMode = Literal["auto", "draft", "edit"]


class DraftPolicy:
    """Decides per chat whether a reply streams as a draft; hears Telegram's refusals."""

    def __init__(self, mode: StreamMode, remembered: Remembered) -> None:
        self._mode = mode
        self._remembered = remembered
        self._server_lacks_drafts = False

    async def allowed(self, chat_id: int, kind: str) -> bool:
        """auto: private chats; draft: any chat until Telegram says no there; edit: never."""
        if self._mode == "edit" or self._server_lacks_drafts:
            return False
        if self._mode == "auto" and kind != "private":
            return False
        return not await self._remembered.holds(REFUSED, chat_id)

    async def refused(self, chat_id: int, *, for_good: bool) -> None:
        if for_good:
            await self._remembered.learn(REFUSED, chat_id)
        elif not self._server_lacks_drafts:
            self._server_lacks_drafts = True
            log.warning("the Bot API server has no sendMessageDraft: replies stream by edits "
                        "until the bot restarts")

"""Knowing when a model thinks: from its chat template and the operator's `reasoning` setting,
the chat format a chat's `/reasoning` asks for, and what its requests tell the engine.

A template thinks when it handles the opening tag (Qwen3's strips earlier turns' thinking) or
its generation prompt opens a block itself (QwQ's, DeepSeek-R1's newer ones). The `reasoning`
setting: `auto` trusts the template; `on` takes the model to think even where its template
says nothing, a reply starting inside a block (a model that writes only the closing tag);
`off` asks every template that can (Qwen3's `enable_thinking`) not to think. A chat's
`/reasoning off` asks the same for that chat alone. Whatever a model writes between the tags
anyway never reaches the answer (`bot.core.thinking`).
"""

from __future__ import annotations

from typing import Literal

from bot.core.prompt import Prompt, Turn
from bot.core.templates import ChatFormat, JinjaFormat, TemplateError
from bot.core.thinking import THINK_TAGS, Thinking, ThinkingTags

ReasoningSetting = Literal["auto", "on", "off"]
"""The operator's `reasoning`: whether the running model thinks."""
REASONING_SETTINGS: tuple[ReasoningSetting, ...] = ("auto", "on", "off")
SHOWN, HIDDEN, QUIET = "show", "hide", "off"
"""The values of a chat's /reasoning: thinking shown above the answer, hidden behind a live
status, or asked for not at all."""
TEMPLATE_SWITCH = "enable_thinking"
"""The variable templates that can turn thinking off read (Qwen3's)."""


def opens_block(prompt: Prompt, tags: ThinkingTags) -> bool:
    """Whether the prompt's closing markup leaves a block open: the reply starts thinking.

    Only markup counts (a template's generation prompt), never text someone wrote."""
    if not prompt or not prompt[-1].special:
        return False
    text = prompt[-1].text
    return text.rfind(tags.open) > text.rfind(tags.close)


def template_thinks(chat_format: ChatFormat, tags: ThinkingTags) -> bool:
    """Whether a chat format is a thinking model's: its template handles the opening tag, or
    its reply's opening opens a block."""
    if isinstance(chat_format, JinjaFormat) and tags.open in chat_format.source:
        return True
    try:
        return opens_block(chat_format.render(None, [Turn("user", "?")]), tags)
    except TemplateError:
        return False


def _switched(chat_format: ChatFormat, enabled: bool) -> ChatFormat:
    if isinstance(chat_format, JinjaFormat):
        return chat_format.with_variables(**{TEMPLATE_SWITCH: enabled})
    return chat_format


class ModelReasoning:
    """The running model's thinking under the operator's setting; see the module's docstring."""

    def __init__(
        self, chat_format: ChatFormat, *, setting: ReasoningSetting = "auto",
        tags: ThinkingTags = THINK_TAGS,
    ) -> None:
        self.setting = setting
        self.tags = tags
        if setting == "auto":
            self._format = chat_format
        else:
            self._format = _switched(chat_format, setting == "on")
        self._quiet = _switched(chat_format, False)
        self.thinks = setting == "on" or (setting == "auto" and template_thinks(chat_format, tags))
        """The model is taken to think before it answers (the window leaves room for it)."""

    @property
    def chat_format(self) -> ChatFormat:
        """The format of a chat that lets the model think (the setting applied)."""
        return self._format

    def format_for(self, mode: str) -> ChatFormat:
        """The chat format of a chat whose /reasoning is `mode` (`off`: asked not to think)."""
        return self._quiet if mode == QUIET else self._format

    def request(self, prompt: Prompt, *, mode: str, budget: int) -> Thinking:
        """What a request rendered as `prompt` tells the engine about its thinking."""
        quiet = mode == QUIET or self.setting == "off"
        opened = opens_block(prompt, self.tags) or (self.setting == "on" and not quiet)
        return Thinking(tags=self.tags, opened=opened, budget=budget, quiet=quiet)

    def reserve(self, *, mode: str, budget: int, room: int) -> int:
        """Tokens a chat's window leaves for the thinking besides the answer's /n, of the
        `room` it has: the budget, where the model thinks and the chat lets it, but at most
        half the room (the conversation keeps the rest); none for -1 (thinking without a limit
        takes what the context has left)."""
        if not self.thinks or mode == QUIET or budget < 0:
            return 0
        return max(0, min(budget, room // 2))

"""Chat formats: the Alpaca instruction template and a model's own (Jinja) chat template.

Both render a system prompt plus turns into a `Prompt`. The GGUF's Jinja template is rendered
with placeholders in place of every message text, so the markup it produces and the users' text
stay apart and are tokenized differently (markup may hold control tokens, user text never does).
Every text goes in through a `TextGuard` that knows the format's own markers, so no one's text
spells them (`bot.core.guard`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import jinja2
import jinja2.sandbox

from bot.core.guard import TextGuard
from bot.core.prompt import Prompt, Segment, Turn, is_open, merge_segments

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
ALPACA_INSTRUCTION = "### Instruction:"
ALPACA_RESPONSE = "### Response:"
ALPACA_GUARD = TextGuard((ALPACA_INSTRUCTION, ALPACA_RESPONSE))


class ChatFormat(Protocol):
    """Turns a system prompt and a conversation into a prompt the model continues."""

    @property
    def name(self) -> str: ...

    @property
    def default_system(self) -> str | None: ...

    @property
    def stop(self) -> tuple[str, ...]: ...

    def render(self, system: str | None, turns: Sequence[Turn]) -> Prompt:
        """Render `turns` (ending with the user's turn) followed by the reply's opening.

        If they end with an `unfinished` assistant turn instead, that reply is left open: its
        text is the end of the prompt, without the markup that closes a turn, so the model
        continues it.
        """
        ...


@dataclass(frozen=True)
class AlpacaFormat:
    """The format of llama.cpp's `-ins` mode with `prompts/alpaca.txt` (and Chinese-Alpaca's).

    ```
    Below is an instruction that describes a task. Write a response ...

    ### Instruction:

    {user}

    ### Response:

    {assistant}
    ```
    Every later turn repeats the Instruction/Response pair; generation stops when the model
    starts a new `### Instruction:` of its own. An unfinished last reply ends the prompt.
    """

    name: str = "alpaca"
    default_system: str | None = ALPACA_PREAMBLE
    stop: tuple[str, ...] = (ALPACA_INSTRUCTION, ALPACA_RESPONSE)

    def render(self, system: str | None, turns: Sequence[Turn]) -> Prompt:
        preamble, guarded = ALPACA_GUARD.conversation(
            self.default_system if system is None else system, turns)
        segments: list[Segment] = []
        if preamble and preamble.strip():
            segments.append(Segment(preamble.strip() + "\n\n", False))
        for turn in guarded:
            if turn.role == "user":
                segments.append(Segment(f"{ALPACA_INSTRUCTION}\n\n", True))
                segments.append(Segment(turn.text.strip(), False))
                segments.append(Segment(f"\n\n{ALPACA_RESPONSE}\n\n", True))
            else:
                segments.append(Segment(turn.text.strip(), False))
                if not turn.unfinished:
                    segments.append(Segment("\n\n", True))
        return merge_segments(segments)


class TemplateError(ValueError):
    """The model's chat template cannot be rendered."""


class JinjaFormat:
    """A model's own chat template (GGUF `tokenizer.chat_template`), e.g. ChatML."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        name: str = "gguf",
        default_system: str | None = None,
        variables: Mapping[str, object] | None = None,
    ) -> None:
        """`variables`: more values the template is rendered with (Qwen3's `enable_thinking`)."""
        # The environment transformers and llama-cpp-python render chat templates in: lenient
        # undefined values (Qwen2.5's `{%- if tools %}` and `message.tool_calls` rely on them)
        # and {% break %} / {% continue %}.
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = _raise_template_error
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template does not parse: {exc}") from exc
        self.source = source
        self.name = name
        self.default_system = default_system
        self._bos = bos_token
        self._eos = eos_token
        self._variables = dict(variables or {})
        self.stop = self._discover_stops()
        self._guard = TextGuard(self._discover_markers())

    def with_variables(self, **variables: object) -> JinjaFormat:
        """The same template rendered with these values too."""
        return JinjaFormat(self.source, bos_token=self._bos, eos_token=self._eos, name=self.name,
                           default_system=self.default_system,
                           variables={**self._variables, **variables})

    def render(self, system: str | None, turns: Sequence[Turn]) -> Prompt:
        messages: list[dict[str, str]] = []
        contents: list[str] = []
        chosen, normalized = self._guard.conversation(
            self.default_system if system is None else system, turns)
        if chosen and chosen.strip():
            messages.append({"role": "system", "content": chosen.strip()})
            contents.append(chosen.strip())
        for turn in normalized:
            # Stripped like AlpacaFormat does: the same conversation renders the same either way.
            messages.append({"role": turn.role, "content": turn.text.strip()})
            contents.append(turn.text.strip())
        if is_open(normalized):
            return self._render_with_placeholders(messages, contents, generation_prompt=False,
                                                  open_last=True)
        return self._render_with_placeholders(messages, contents, generation_prompt=True)

    def _render_with_placeholders(
        self, messages: list[dict[str, str]], contents: list[str], *, generation_prompt: bool,
        open_last: bool = False,
    ) -> Prompt:
        # Every content is replaced by a random marker, the template rendered, and the result
        # cut at the markers: what lies between them is markup, the markers become plain text.
        # `open_last`: the prompt ends with the last message's text (the markup after it closes
        # the turn the model is to continue).
        tag = secrets.token_hex(8)
        marked = [
            {"role": m["role"], "content": f"\x00{tag}:{i}\x00"} for i, m in enumerate(messages)
        ]
        text = self._render_raw(marked, generation_prompt)
        segments: list[Segment] = []
        position = 0
        last = -1
        for match in re.finditer(f"\x00{tag}:(\\d+)\x00", text):
            segments.append(Segment(text[position : match.start()], True))
            last = int(match.group(1))
            segments.append(Segment(contents[last], False))
            position = match.end()
        if not open_last:
            segments.append(Segment(text[position:], True))
        elif last != len(messages) - 1:
            raise TemplateError("the model's chat template cannot continue a reply")
        return merge_segments(segments)

    def _render_raw(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        try:
            return self._template.render(
                **self._variables,
                messages=messages,
                add_generation_prompt=generation_prompt,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template failed: {exc}") from exc

    def _discover_stops(self) -> tuple[str, ...]:
        """Find the markup that closes an assistant turn and opens a user turn.

        The model normally ends its turn with an end-of-generation token; these strings catch
        a model that writes the markup as plain text instead.
        """
        messages = [
            {"role": "user", "content": "\x01"},
            {"role": "assistant", "content": "\x02"},
            {"role": "user", "content": "\x03"},
        ]
        try:
            text = self._render_raw(messages, generation_prompt=False)
        except TemplateError:
            return ()
        between = text.partition("\x02")[2].partition("\x03")[0]
        stops = []
        for line in between.splitlines():
            marker = line.strip()
            if marker and marker not in (self._bos,):
                stops.append(marker)
        return tuple(dict.fromkeys(stops))

    def _discover_markers(self) -> tuple[str, ...]:
        """Each line of the markup the template writes around messages (cut at its BOS and EOS
        strings): text that, typed by someone, could read as this format's structure."""
        texts = ["\x01", "\x02", "\x03", "\x04"]
        conversation = [{"role": role, "content": text} for role, text in
                        zip(("system", "user", "assistant", "user"), texts, strict=True)]
        try:
            rendered = self._render_raw(conversation, generation_prompt=True)
        except TemplateError:  # a template without a system role (Gemma's)
            try:
                rendered = self._render_raw(conversation[1:], generation_prompt=True)
            except TemplateError:
                return ()
        markup = re.split("[\x01-\x04]", rendered)
        for token in (self._bos, self._eos):
            if token:
                markup = [piece for text in markup for piece in text.split(token)]
        lines = [line.strip() for text in markup for line in text.splitlines()]
        # A bare word left between control tokens (ChatML's `assistant` after a BOS of
        # `<|im_start|>`) is no markup without them, and people write "user" and "system" all
        # the time: only pieces with punctuation (`USER:`, `### Response:`) are markers.
        return tuple(dict.fromkeys(m for m in (*lines, self._bos, self._eos)
                                   if m and not re.fullmatch(r"[\w\s]+", m)))


def _raise_template_error(message: str) -> None:
    raise TemplateError(message)


def choose_format(
    setting: str,
    *,
    model_template: str | None,
    bos_token: str = "",
    eos_token: str = "",
) -> ChatFormat:
    """Pick the chat format for a model: "auto", "alpaca", "gguf", or a Jinja template text.

    "auto" uses the model's own template when the GGUF carries one, else Alpaca (the right
    default for LLaMA/Alpaca checkpoints converted without one).
    """
    if setting == "alpaca":
        return AlpacaFormat()
    if setting in ("auto", "gguf"):
        if model_template:
            return JinjaFormat(model_template, bos_token=bos_token, eos_token=eos_token)
        if setting == "gguf":
            raise TemplateError("the model file has no chat template; use template = \"alpaca\"")
        return AlpacaFormat()
    return JinjaFormat(setting, bos_token=bos_token, eos_token=eos_token, name="custom")

"""A thinking model on the real engines: a copy of the demo model whose chat template opens the
assistant's turn with `<think>` (the `gguf` package rewrites `tokenizer.chat_template`). The
demo model never closes the block, so the budget must: the engine feeds the closing tag and the
model answers; the answer holds none of the thinking, and neither does the next turn's prompt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata, get_field_data
from sqlalchemy import select

from bot.core.chats import ChatRef
from bot.core.prompt import Turn, prompt_text
from bot.core.templates import choose_format
from bot.core.thinking import Thinking
from bot.engine.base import Finished, GenerationEvent, GenerationRequest, SamplingParams, TextDelta
from bot.engine.llama import EngineOptions, LlamaEngine
from bot.engine.pool import PoolEngine, PoolOptions
from bot.ops.runtime import open_runtime
from bot.store.schema import TurnRow
from tests.cpu import THREADS
from tests.sinks import RecordingSink, ask

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

OPENING = "<|im_start|>assistant\n"


@pytest.fixture(scope="session")
def thinking_model(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model with a chat template whose reply opens a thinking block."""
    reader = gguf.GGUFReader(str(demo_model))
    template = get_field_data(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    thinking = template.replace(f"{{{{ '{OPENING}' }}}}", f"{{{{ '{OPENING}<think>\n' }}}}")
    assert thinking != template, "the demo model's template changed: update this test"
    path = tmp_path_factory.mktemp("thinking") / "SmolLM2-thinking.gguf"
    writer = gguf.GGUFWriter(str(path), arch=get_field_data(reader, gguf.Keys.General.ARCHITECTURE),
                             endianess=reader.endianess)
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.CHAT_TEMPLATE: MetadataDetails(
        gguf.GGUFValueType.STRING, thinking)}, [])
    return path


@pytest.fixture(scope="session", params=["simple", "pool"])
def thinking_engine(request: pytest.FixtureRequest, thinking_model: Path) -> Iterator[Any]:
    if request.param == "simple":
        engine: Any = LlamaEngine(EngineOptions(model_path=thinking_model, n_ctx=1024, threads=THREADS))
    else:
        engine = PoolEngine(PoolOptions(model_path=thinking_model, n_ctx=1024, n_slots=2,
                                        threads=THREADS))
    yield engine
    asyncio.run(engine.aclose())


class Recording:
    """The engine, keeping every request and how each ended."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.requests: list[GenerationRequest] = []
        self.finished: list[Finished] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.requests.append(request)
        async for event in self._engine.generate(request):
            if isinstance(event, Finished):
                self.finished.append(event)
            yield event


async def test_the_engine_closes_the_block_at_the_budget_and_the_model_answers(
    thinking_engine: Any,
) -> None:
    info = thinking_engine.info
    chat_format = choose_format("auto", model_template=info.chat_template,
                                bos_token=info.bos_token, eos_token=info.eos_token)
    prompt = chat_format.render(None, [Turn("user", "What is the capital of France?")])
    assert prompt_text(prompt).endswith(f"{OPENING}<think>\n")
    request = GenerationRequest(
        chat_key="think-engine", prompt=prompt, stop=chat_format.stop,
        sampling=SamplingParams(n_predict=12, temp=0.0, repeat_penalty=1.0),
        thinking=Thinking(opened=True, budget=6),
    )
    deltas: list[TextDelta] = []
    finished: Finished | None = None
    async for event in thinking_engine.generate(request):
        if isinstance(event, TextDelta):
            deltas.append(event)
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None
    assert "".join(d.text for d in deltas if d.thinking) == finished.thinking
    assert "".join(d.text for d in deltas if not d.thinking) == finished.text
    assert finished.thinking.strip() and finished.text.strip()
    assert "think>" not in finished.text and "think>" not in finished.thinking
    # The budget's tokens, then the closing tag's few: never more.
    assert 6 < finished.n_thinking <= 6 + 5
    assert finished.n_generated - finished.n_thinking <= 12  # -n counts the answer alone
    without = GenerationRequest(chat_key="think-engine-none", prompt=prompt,
                                stop=chat_format.stop,
                                sampling=SamplingParams(n_predict=12, temp=0.0,
                                                        repeat_penalty=1.0))
    async for event in thinking_engine.generate(without):
        if isinstance(event, Finished):
            assert event.thinking == "" and event.n_thinking == 0  # nothing split


async def test_a_question_gets_an_answer_without_its_thinking_in_it_or_in_the_next_prompt(
    make_settings: Any, thinking_engine: Any,
) -> None:
    settings = make_settings(seed=3, n_predict=24, reasoning_budget=8, ctx=1024, max_ctx=1024)
    engine = Recording(thinking_engine)
    async with open_runtime(settings, engine=engine) as runtime:
        service = runtime.service
        chat = ChatRef(31, "private")
        sink = RecordingSink()
        first = await ask(service, chat, "What is the capital of France?", sink)
        assert first is not None and first.text.strip()
        thought = engine.finished[0].thinking.strip()
        assert thought, "the model thought until the budget closed the block"
        assert engine.requests[0].thinking is not None and engine.requests[0].thinking.opened
        assert thought not in first.text and "think>" not in first.text
        assert sink.final == first.text and sink.thoughts and sink.thoughts[0][0] is None
        async with runtime.sessions() as session:
            reply = (await session.execute(select(TurnRow).where(
                TurnRow.chat_id == 31, TurnRow.role == "assistant"))).scalars().one()
        assert (reply.text, reply.thinking) == (first.text, thought)
        second = await ask(service, chat, "And of Italy?")
        assert second is not None
        prompt = prompt_text(engine.requests[1].prompt)
        assert first.text in prompt  # the answer is history ...
        assert thought not in prompt and prompt.count("<think>") == 1  # ... its thinking is not
        assert prompt.endswith(f"{OPENING}<think>\n")

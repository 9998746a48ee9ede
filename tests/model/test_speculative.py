"""Speculative decoding on the real demo model: a pool that drafts (`draft = "ngram"`) writes
the reply a pool without drafting writes, token for token and delta for delta, greedy or
sampled with a fixed seed, alone or batched, and ends it the same way (stop strings, /n, the
context's end, a thinking budget's forced tokens, /stop). Each test also checks that drafts
were accepted in it, so that it proves something about drafting and not about a pool that
happened not to draft.

llama.cpp's CPU attention computes a token's logits bit for bit the same in a row of drafts as
alone only with flash attention: the q8_0 cache always has it, and a drafting pool turns it on
for the f16 cache too (without it a row's logits differ from a lone token's at about a third of
the positions, by up to ~0.6 on this model, and a greedy reply could take the other of two nearly
tied tokens). So the drafted pools must agree exactly with pools that compute the same way and
never draft.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.core.prompt import Turn
from bot.core.templates import choose_format
from bot.core.thinking import Thinking
from bot.engine.base import CancelToken, Finished, GenerationRequest, SamplingParams, TextDelta
from bot.engine.drafting import ChatDraft
from bot.engine.draftplan import StepCost
from bot.engine.ngram import Guess
from bot.engine.pool import PoolEngine, PoolOptions
from bot.engine.slots import LONE_TOKEN_CELLS
from tests.cpu import THREADS
from tests.model.test_thinking_model import thinking_model  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

PARAGRAPH = (
    "Teh alpacas on our farm eat grass and hay evry day, and they drink alot of water when the "
    "wether is hot. In the morning we opne the gate and they walk slowly to the big feild near "
    "the river. The youngest alpaca, Pancho, allways stays close to his mother. In the evening "
    "we count them, brush thier wool and close the barn before it gets dark."
)
DOCUMENT = (
    "Passage from the farm handbook: Alpacas should be sheared once a year, in late spring, "
    "before the hot weather begins. Each animal gives between two and five kilograms of fleece. "
    "The fleece is sorted by colour and quality, washed in warm water and dried in the shade. "
    "Alpacas should never be sheared in winter, because they need their fleece to stay warm."
)
QUESTIONS = (
    f"Correct the spelling of this paragraph and write all of it out again:\n\n{PARAGRAPH}",
    f"{DOCUMENT}\n\nQuote the handbook's sentence about when alpacas are sheared, word for word.",
    "Continue this list: Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, "
    "Monday, Tuesday, Wednesday,",
    "What do alpacas eat?",
)
SYSTEM = "You are a helpful assistant."


def greedy(n_predict: int = 120) -> SamplingParams:
    return SamplingParams(temp=0.0, repeat_penalty=1.0, n_predict=n_predict, seed=1)


def sampled(seed: int, n_predict: int = 120) -> SamplingParams:
    """The whole chain: top-k, top-p, min-p, a repeat penalty over the reply, temperature."""
    return SamplingParams(temp=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.3,
                          repeat_last_n=64, n_predict=n_predict, seed=seed)


def drafting_pays(engine: PoolEngine) -> PoolEngine:
    """Fix the step's cost where drafting pays (a pass over the weights ten times a token's), so
    that the pool drafts whatever the machine's load: what the pool measures at its start on a
    busy test machine (one thread, tiny model) can make a drafted token look too dear to check,
    and these tests are about what drafts change in a reply, not about when they pay."""
    drafting = engine._drafting  # noqa: SLF001
    if drafting is not None:
        drafting.cost = StepCost(0.01, 0.001, learn=False)
    return engine


@asynccontextmanager
async def open_pool(model: Path, draft: str, **options: Any) -> AsyncIterator[PoolEngine]:
    options.setdefault("n_ctx", 1024)
    options.setdefault("kv_type", "q8_0")
    engine = drafting_pays(await asyncio.to_thread(PoolEngine, PoolOptions(
        model_path=model, n_slots=3, threads=THREADS, draft=draft, **options)))
    try:
        yield engine
    finally:
        await engine.aclose()


def open_pools(model: Path, kv_type: str) -> Iterator[dict[str, PoolEngine]]:
    """The same model without drafting and drafting from each chat's tokens."""
    engines = {draft: drafting_pays(PoolEngine(PoolOptions(
        model_path=model, n_ctx=1024, n_slots=3, threads=THREADS, draft=draft, kv_type=kv_type)))
               for draft in ("none", "ngram")}
    yield engines
    for engine in engines.values():
        asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def pools(demo_model: Path) -> Iterator[dict[str, PoolEngine]]:
    """Pools whose rows of drafts compute what lone tokens compute (q8_0: flash attention)."""
    yield from open_pools(demo_model, "q8_0")


class NoGuesses:
    """A draft source that never guesses: a drafting pool that writes token by token."""

    name = "none"
    free = True

    def guess(self, chats: Sequence[tuple[ChatDraft, int]]) -> list[list[Guess]]:
        return [[] for _ in chats]

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def f16_pools(demo_model: Path) -> Iterator[dict[str, PoolEngine]]:
    """On the f16 cache: a drafting pool, and one that computes the same way (flash attention)
    but never drafts, as the reference."""
    engines = {name: drafting_pays(PoolEngine(PoolOptions(
        model_path=demo_model, n_ctx=1024, n_slots=3, threads=THREADS, draft="ngram",
        kv_type="f16"))) for name in ("none", "ngram")}
    drafting = engines["none"]._drafting  # noqa: SLF001 (the reference's drafts switched off)
    assert drafting is not None
    drafting.source = NoGuesses()
    yield engines
    for engine in engines.values():
        asyncio.run(engine.aclose())


class Reply:
    """One reply as its caller saw it, and what its chat's slot holds after it."""

    def __init__(self, deltas: list[TextDelta], finished: Finished, cached: list[int] | None,
                 accepted: int) -> None:
        self.deltas = [(delta.text, delta.thinking) for delta in deltas]
        self.finished = finished
        self.cached = cached
        self.accepted = accepted
        """Drafted tokens that stood while this reply was written (0 without drafting)."""

    @property
    def seen(self) -> tuple[object, ...]:
        """Everything a user or the chat layer can tell of the reply."""
        done = self.finished
        return (self.deltas, done.reason, done.text, done.thinking, done.n_generated,
                done.n_thinking, done.n_prompt_tokens, self.cached)


def request(engine: PoolEngine, key: str, question: str, sampling: SamplingParams,
            **kwargs: Any) -> GenerationRequest:
    info = engine.info
    chat = choose_format("auto", model_template=info.chat_template, bos_token=info.bos_token,
                         eos_token=info.eos_token)
    return GenerationRequest(chat_key=key, prompt=chat.render(SYSTEM, [Turn("user", question)]),
                             sampling=sampling, stop=kwargs.pop("stop", chat.stop), **kwargs)


def accepted_so_far(engine: PoolEngine) -> int:
    stats = engine.draft_stats()
    return stats.accepted if stats is not None else 0


async def write(engine: PoolEngine, key: str, question: str, sampling: SamplingParams,
                **kwargs: Any) -> Reply:
    """The reply in a chat of its own (forgotten after, so no reply reuses another's cache)."""
    before = accepted_so_far(engine)
    deltas: list[TextDelta] = []
    finished = None
    async for event in engine.generate(request(engine, key, question, sampling, **kwargs)):
        if isinstance(event, TextDelta):
            deltas.append(event)
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None
    cached = engine.cached_tokens(key)
    await engine.forget(key)
    return Reply(deltas, finished, cached, accepted_so_far(engine) - before)


UNDRAFTED: dict[tuple[int, str, str, str], Reply] = {}
"""Replies of the module's pools without drafting, written once for the tests that compare with
them (a reply depends on its question, sampling and options only: `write` forgets its chat)."""


async def undrafted(engine: PoolEngine, key: str, question: str, sampling: SamplingParams,
                    **kwargs: Any) -> Reply:
    known = (id(engine), question, repr(sampling), repr(sorted(kwargs.items())))
    if known not in UNDRAFTED:
        UNDRAFTED[known] = await write(engine, key, question, sampling, **kwargs)
    return UNDRAFTED[known]


async def both(pools: dict[str, PoolEngine], key: str, question: str, sampling: SamplingParams,
               **kwargs: Any) -> tuple[Reply, Reply]:
    plain = await undrafted(pools["none"], key, question, sampling, **kwargs)
    drafted = await write(pools["ngram"], key, question, sampling, **kwargs)
    return plain, drafted


async def test_greedy_replies_are_token_for_token_the_undrafted_ones(
        pools: dict[str, PoolEngine]) -> None:
    accepted = []
    for number, question in enumerate(QUESTIONS):
        plain, drafted = await both(pools, f"greedy-{number}", question, greedy())
        assert drafted.seen == plain.seen, question
        assert plain.finished.n_generated > 20
        accepted.append(drafted.accepted)
    # The replies that repeat their prompt were written with drafts that stood.
    assert all(n > 10 for n in accepted[:3]), accepted


async def test_on_an_f16_cache_greedy_replies_are_token_for_token_the_undrafted_ones(
        f16_pools: dict[str, PoolEngine]) -> None:
    assert f16_pools["ngram"]._ctx.flash_attention  # noqa: SLF001
    accepted = []
    # A paragraph rewritten, a list continued and a free answer (the greedy test above also
    # quotes a document: the same drafting, on the other cache).
    for number, question in enumerate((QUESTIONS[0], QUESTIONS[2], QUESTIONS[3])):
        plain, drafted = await both(f16_pools, f"f16-{number}", question, greedy())
        assert drafted.seen == plain.seen, question
        assert plain.accepted == 0
        accepted.append(drafted.accepted)
    assert all(n > 10 for n in accepted[:2]), accepted


async def test_on_an_f16_cache_a_long_reply_leaves_the_undrafted_cache_bit_for_bit(
        demo_model: Path) -> None:
    """Past LONE_TOKEN_CELLS cached tokens llama.cpp computes a token that is a step's part
    alone apart from one in a row, with two threads or more (it splits the token's attention
    among them): a drafting pool never leaves a token alone there, so a long reply leaves every
    key and value of its chat's cache (and so computed every logit) bit for bit as a pool that
    never drafts does."""
    states = {}
    for name in ("none", "ngram"):
        engine = drafting_pays(await asyncio.to_thread(PoolEngine, PoolOptions(
            model_path=demo_model, n_ctx=512, n_slots=1, threads=2, draft="ngram",
            kv_type="f16")))
        if name == "none":
            engine._drafting.source = NoGuesses()  # type: ignore[union-attr]  # noqa: SLF001
        try:
            key = f"f16-kv-{name}"
            question = f"{DOCUMENT}\n\n{QUESTIONS[0]}"  # ~200 tokens
            async for _ in engine.generate(request(engine, key, question, greedy(150))):
                pass
            slot = engine._cache.slots[0]  # noqa: SLF001
            assert len(slot.tokens) > LONE_TOKEN_CELLS + 80  # 100 tokens written past it
            states[name] = (list(slot.tokens), bytes(engine._ctx.state_data(slot)))  # noqa: SLF001
        finally:
            await engine.aclose()
    assert states["ngram"][0] == states["none"][0]
    assert states["ngram"][1] == states["none"][1]


def test_an_f16_cache_without_drafting_keeps_its_faster_attention(demo_model: Path) -> None:
    """Flash attention is on only where exact rows need it: over long caches the CPU's plain
    attention is the faster (the pool's benchmarks stay as they were with `draft = "none"`)."""
    engine = PoolEngine(PoolOptions(model_path=demo_model, n_ctx=256, n_slots=1, threads=THREADS,
                                    kv_type="f16"))
    try:
        assert not engine._ctx.flash_attention  # noqa: SLF001
    finally:
        asyncio.run(engine.aclose())


async def test_sampled_replies_with_a_seed_are_the_undrafted_ones(
        pools: dict[str, PoolEngine]) -> None:
    """Each position is sampled with the chat's whole chain and its seeded draw, the repeat
    penalty counting the tokens written, never a draft the model did not write."""
    accepted = 0
    for number, (seed, question) in enumerate(zip((3, 5, 11), QUESTIONS[:3], strict=True)):
        plain, drafted = await both(pools, f"sampled-{number}", question, sampled(seed))
        assert drafted.seen == plain.seen, (seed, question)
        accepted += drafted.accepted
    assert accepted > 10


async def test_chats_drafting_together_write_what_each_writes_alone(
        pools: dict[str, PoolEngine]) -> None:
    alone = [await undrafted(pools["none"], f"alone-{n}", question, greedy())
             for n, question in enumerate(QUESTIONS[:3])]
    together = await asyncio.gather(*(write(pools["ngram"], f"together-{n}", question, greedy())
                                      for n, question in enumerate(QUESTIONS[:3])))
    for one, other in zip(alone, together, strict=True):
        assert other.seen == one.seen
    assert sum(reply.accepted for reply in together) > 10


async def test_stop_strings_and_the_length_limit_end_the_reply_where_they_would(
        pools: dict[str, PoolEngine]) -> None:
    plain, drafted = await both(pools, "stop", QUESTIONS[2], greedy(), stop=["Saturday"])
    assert plain.finished.reason == "stop" and "Saturday" not in plain.finished.text
    assert drafted.seen == plain.seen and drafted.accepted > 0
    for limit in (1, 2, 7, 30):
        plain, drafted = await both(pools, f"limit-{limit}", QUESTIONS[0], greedy(limit))
        assert plain.finished.reason == "length" and plain.finished.n_generated == limit
        assert drafted.seen == plain.seen
    assert drafted.accepted > 0


async def test_the_context_limit_ends_the_reply_where_it_would(demo_model: Path) -> None:
    # llama.cpp sizes a context in multiples of 256 tokens: a prompt of ~200 leaves ~50.
    question = f"Correct the spelling of these paragraphs:\n\n{PARAGRAPH}\n\n{PARAGRAPH}"
    replies = []
    for draft in ("none", "ngram"):
        async with open_pool(demo_model, draft, n_ctx=256) as engine:
            replies.append(await write(engine, "context", question, greedy(400)))
    plain, drafted = replies
    assert plain.finished.reason == "context"
    assert plain.finished.n_prompt_tokens + plain.finished.n_generated == 256
    assert drafted.seen == plain.seen and drafted.accepted > 0


async def test_chinese_streams_the_same_deltas(pools: dict[str, PoolEngine]) -> None:
    """The UTF-8-safe stream: a character cut across tokens goes out whole, once, as it would
    without drafts (a delta never shows text that a rejected draft takes back)."""
    question = "请把这句话重复三遍：我们的羊驼每天吃草，喝很多水。我们的羊驼每天吃草，喝很多水。"
    plain, drafted = await both(pools, "chinese", question, greedy(80))
    assert any(ord(char) > 0x2E80 for text, _ in plain.deltas for char in text)
    assert drafted.seen == plain.seen and drafted.accepted > 0


async def test_stop_leaves_a_part_of_the_undrafted_reply_and_cache(
        pools: dict[str, PoolEngine]) -> None:
    """/stop in the middle: what was shown and what the slot keeps are a beginning of the
    undrafted reply and cache (no draft the model did not write stays anywhere)."""
    whole = await write(pools["none"], "whole", QUESTIONS[0], greedy(150))
    engine = pools["ngram"]
    for wanted in (5, 30):
        cancel = CancelToken()
        shown = ""
        finished = None
        async for event in engine.generate(request(engine, f"stopped-{wanted}", QUESTIONS[0],
                                                   greedy(150), cancel=cancel)):
            if isinstance(event, TextDelta):
                shown += event.text
                if len(shown) >= wanted:
                    cancel.cancel()
            elif isinstance(event, Finished):
                finished = event
        assert finished is not None and finished.reason == "cancelled"
        cached = engine.cached_tokens(f"stopped-{wanted}")
        await engine.forget(f"stopped-{wanted}")
        assert whole.finished.text.startswith(finished.text) and len(finished.text) >= wanted
        assert whole.finished.text.startswith(shown)
        assert cached is not None and whole.cached is not None
        assert cached == whole.cached[: len(cached)]
        assert len(cached) >= finished.n_prompt_tokens + finished.n_generated - 1


async def test_a_thinking_budgets_forced_closing_is_fed_as_without_drafts(
        thinking_model: Path) -> None:  # noqa: F811 (the fixture)
    replies = []
    for draft in ("none", "ngram"):
        async with open_pool(thinking_model, draft) as engine:
            replies.append(await write(engine, "thinking", QUESTIONS[0], greedy(40),
                                       thinking=Thinking(opened=True, budget=30)))
    plain, drafted = replies
    assert plain.finished.thinking.strip() and plain.finished.text.strip()
    assert 30 < plain.finished.n_thinking <= 30 + 5
    assert drafted.seen == plain.seen and drafted.accepted > 0



async def test_metrics_and_the_admins_settings_show_the_drafting(
        pools: dict[str, PoolEngine]) -> None:
    from prometheus_client import generate_latest

    from bot.chat.overview import draft_line
    from bot.metrics import Metrics

    await write(pools["ngram"], "metrics", QUESTIONS[2], greedy(60))
    stats = pools["ngram"].draft_stats()
    assert stats is not None and stats.source == "ngram" and 0 < stats.accepted <= stats.drafted
    assert pools["none"].draft_stats() is None
    scraped = {}
    for draft, engine in pools.items():
        metrics = Metrics()
        metrics.watch_engine(lambda engine=engine: engine, kind="pool")
        scraped[draft] = generate_latest(metrics.registry).decode()
    assert f"alpaca_bot_drafted_tokens_total {float(stats.drafted)}" in scraped["ngram"]
    assert f"alpaca_bot_draft_accepted_tokens_total {float(stats.accepted)}" in scraped["ngram"]
    assert "alpaca_bot_drafted_tokens" not in scraped["none"]
    rate = round(100 * stats.accepted / stats.drafted)
    assert draft_line(stats) == (f"Drafting (ngram): {stats.accepted} of {stats.drafted} "
                                 f"drafted tokens accepted ({rate}%)")


async def test_a_draft_model_drafts_what_the_chat_does_not_hold_and_the_reply_stays(
        pools: dict[str, PoolEngine], demo_model: Path) -> None:
    """`draft` = the path of a GGUF with the model's vocabulary: here the demo model drafts for
    itself (in its own context), so its greedy guesses stand even where the chat holds nothing
    to copy (a free answer), and the replies are still the undrafted pool's."""
    accepted = []
    async with open_pool(demo_model, str(demo_model)) as engine:
        for number, question in enumerate((QUESTIONS[3], QUESTIONS[0])):
            plain = await undrafted(pools["none"], f"model-{number}", question, greedy())
            drafted = await write(engine, f"model-{number}", question, greedy())
            assert drafted.seen == plain.seen, question
            accepted.append((drafted.accepted, plain.finished.n_generated))
        stats = engine.draft_stats()
    assert stats is not None and stats.source == demo_model.name
    # Most of the free answer's tokens came as drafts that stood (an n-gram finds few there).
    assert all(stood > n_generated // 2 for stood, n_generated in accepted), accepted


def test_a_draft_model_of_another_vocabulary_is_refused(demo_model: Path, tmp_path: Path) -> None:
    from bot.errors import ModelError
    from tests.models.checkpoints import write_tiny_f16

    other = write_tiny_f16(tmp_path, tmp_path / "models")  # its own 360-token vocabulary
    with pytest.raises(ModelError, match="another vocabulary than the model"):
        PoolEngine(PoolOptions(model_path=demo_model, n_ctx=256, n_slots=1, threads=THREADS,
                               draft=str(other)))

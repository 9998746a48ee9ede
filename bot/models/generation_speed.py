"""Generation speed of a loaded model the way llama-bench's `tg` test measures it: from an empty
cache, decode one token at a time (random tokens, each with its logits) and count tokens/s.

llama-bench decodes 128 tokens. On a 7B model on two cores that is most of a minute, so the run
also stops once `max_seconds` have passed (after at least `min_tokens`): the caller gives it a
small share of the time the other measurements took. (On a machine whose cores are busy with
other work, single-token decodes slow down far more than batches: llama.cpp's threads meet at a
barrier after every operation, and a thread waiting for its turn on a core holds them all.)
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from bot.models.evaluator import Evaluator


@dataclass(frozen=True)
class GenerationSpeed:
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def measure_generation(
    evaluator: Evaluator, *, max_tokens: int = 128, min_tokens: int = 8,
    max_seconds: float | None = None, warm_up: bool = True, seed: int = 0,
) -> GenerationSpeed:
    """Decode up to `max_tokens` single tokens, after one untimed warm-up token as llama-bench
    does (`warm_up=False` when the model has just been evaluated, as after perplexity)."""
    rng = random.Random(seed)
    max_tokens = min(max_tokens, evaluator.n_ctx - 1)
    evaluator.clear()
    token = evaluator.bos if evaluator.add_bos else rng.randrange(evaluator.n_vocab)
    if warm_up:
        evaluator.decode_one(token, 0)
        evaluator.clear()
    done = 0
    started = time.perf_counter()
    while done < max_tokens:
        evaluator.decode_one(token, done)
        done += 1
        token = rng.randrange(evaluator.n_vocab)
        if (max_seconds is not None and done >= min_tokens
                and time.perf_counter() - started >= max_seconds):
            break
    return GenerationSpeed(tokens=done, seconds=time.perf_counter() - started)

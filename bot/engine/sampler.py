"""The pool's sampling: one native llama.cpp sampler chain per reply, built from the request's
knobs, sampling straight from a row of the context's logits (no Python per vocabulary entry)."""

from __future__ import annotations

from typing import Any

from bot.engine.base import SamplingParams


class Sampler:
    """A native llama.cpp sampler chain for one reply: penalties, top-k/p, min-p, temperature.

    Every knob is the request's own; `repeat_last_n` comes resolved (0 switches the penalty
    off; the chat layer turns -1 into the chat's window).
    """

    def __init__(self, sampling: SamplingParams, *, n_vocab: int, seed: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        params = llama_cpp.llama_sampler_chain_default_params()
        params.no_perf = True
        self._chain = llama_cpp.llama_sampler_chain_init(params)
        for name, args in chain_stages(sampling, n_vocab=n_vocab, seed=seed):
            stage = getattr(llama_cpp, f"llama_sampler_init_{name}")(*args)
            llama_cpp.llama_sampler_chain_add(self._chain, stage)

    def sample(self, ctx: Any, index: int) -> int:
        """Sample from the logits of batch row `index`; the chain remembers the token."""
        return int(self._lib.llama_sampler_sample(self._chain, ctx, index))

    def close(self) -> None:
        if self._chain is not None:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None


Stage = tuple[str, tuple[float | int, ...]]


def chain_stages(sampling: SamplingParams, *, n_vocab: int, seed: int) -> list[Stage]:
    """The sampler chain of one reply as (llama.cpp `llama_sampler_init_<name>`, arguments):
    the repeat penalty over the last `repeat_last_n` tokens, then greedy at temperature 0, else
    top-k, top-p, min-p, temperature and the seeded draw."""
    stages: list[Stage] = [
        ("penalties", (n_vocab, sampling.repeat_last_n, sampling.repeat_penalty, 0.0, 0.0)),
    ]
    if sampling.temp <= 0:
        return [*stages, ("greedy", ())]
    return [
        *stages,
        ("top_k", (sampling.top_k,)),
        ("top_p", (sampling.top_p, 1)),
        ("min_p", (sampling.min_p, 1)),
        ("temp", (sampling.temp,)),
        ("dist", (seed,)),
    ]

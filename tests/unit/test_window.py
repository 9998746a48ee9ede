"""The context window: the newest turns that fit the token budget, cut at user turns."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from bot.core.prompt import Prompt, Turn, prompt_text
from bot.core.templates import AlpacaFormat, ChatFormat, JinjaFormat
from bot.core.window import fit_window
from bot.errors import InputTooLong, UserError

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class CharCounter:
    """A deterministic tokenizer: one token per character of the prompt; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, prompt: Prompt) -> int:
        self.calls += 1
        return len(prompt_text(prompt))


class WordCounter(CharCounter):
    async def __call__(self, prompt: Prompt) -> int:
        self.calls += 1
        return len(prompt_text(prompt).split())


def conversation(n: int, seed: int = 0) -> list[Turn]:
    """n turns alternating user/assistant from a user turn, of varied lengths."""
    rng = random.Random(seed)
    return [
        Turn("user" if i % 2 == 0 else "assistant", f"t{i} " + "w " * rng.randrange(0, 30))
        for i in range(n)
    ]


def cost(fmt: ChatFormat, system: str | None, turns: Sequence[Turn], start: int) -> int:
    return len(prompt_text(fmt.render(system, turns[start:])))


ALPACA = AlpacaFormat()
TURNS = [
    Turn("user", "What is the capital of France?"),
    Turn("assistant", "Paris."),
    Turn("user", "And of Italy?"),
    Turn("assistant", "Rome."),
    Turn("user", "Thanks!"),
]


async def test_a_budget_that_exactly_fits_keeps_the_oldest_turn() -> None:
    full = cost(ALPACA, None, TURNS, 0)
    window = await fit_window(ALPACA, None, TURNS, budget=full, count_tokens=CharCounter())
    assert window.first_turn == 0
    assert window.dropped() == 0
    assert window.n_tokens == full
    assert window.budget == full
    assert window.prompt == ALPACA.render(None, TURNS)


async def test_one_token_less_drops_the_oldest_question_and_its_answer() -> None:
    full = cost(ALPACA, None, TURNS, 0)
    window = await fit_window(ALPACA, None, TURNS, budget=full - 1, count_tokens=CharCounter())
    assert window.first_turn == 2
    assert window.prompt == ALPACA.render(None, TURNS[2:])
    assert window.n_tokens == cost(ALPACA, None, TURNS, 2) <= full - 1
    assert "France" not in prompt_text(window.prompt)
    assert "Paris" not in prompt_text(window.prompt)


@pytest.mark.parametrize("system", [None, "", "Answer in one word."])
@pytest.mark.parametrize("fmt", [ALPACA, JinjaFormat(CHATML)], ids=["alpaca", "chatml"])
async def test_every_user_turn_is_the_start_of_a_window_at_its_exact_cost(
    fmt: ChatFormat, system: str | None
) -> None:
    starts = [i for i, turn in enumerate(TURNS) if turn.role == "user"]
    for earlier, start in zip([None, *starts], starts, strict=False):
        exact = cost(fmt, system, TURNS, start)
        assert (await fit_window(fmt, system, TURNS, budget=exact,
                          count_tokens=CharCounter())).first_turn == start
        if earlier is not None:
            # Enough for this start but one token short of the previous one.
            budget = cost(fmt, system, TURNS, earlier) - 1
            assert (await fit_window(fmt, system, TURNS, budget=budget,
                              count_tokens=CharCounter())).first_turn == start


async def test_the_window_never_starts_at_an_assistant_turn() -> None:
    turns = [
        Turn("assistant", "a reply to a question deleted long ago"),
        Turn("user", "q1"),
        Turn("assistant", "a much longer answer than any question " * 3),
        Turn("user", "q2"),
    ]
    roomy = await fit_window(ALPACA, "", turns, budget=10_000, count_tokens=CharCounter())
    assert roomy.first_turn == 1
    # A budget for "answer + q2" but not "q1 + answer + q2" does not start at the answer.
    budget = cost(ALPACA, "", turns, 2) + 5
    assert budget < cost(ALPACA, "", turns, 1)
    tight = await fit_window(ALPACA, "", turns, budget=budget, count_tokens=CharCounter())
    assert tight.first_turn == 3
    assert tight.prompt == ALPACA.render("", turns[3:])


async def test_the_last_turn_is_always_in_the_window() -> None:
    last_only = cost(ALPACA, None, TURNS, 4)
    window = await fit_window(ALPACA, None, TURNS, budget=last_only, count_tokens=CharCounter())
    assert window.first_turn == 4
    assert "Thanks!" in prompt_text(window.prompt)
    assert prompt_text(window.prompt).endswith("### Response:\n\n")


async def test_consecutive_user_turns_are_dropped_one_by_one() -> None:
    turns = [
        Turn("user", "first question"),
        Turn("assistant", "answer"),
        Turn("user", "a message that got no reply"),
        Turn("user", "the question"),
    ]
    both = cost(ALPACA, None, turns, 2)
    assert (await fit_window(ALPACA, None, turns, budget=both,
                      count_tokens=CharCounter())).first_turn == 2
    window = await fit_window(ALPACA, None, turns, budget=both - 1, count_tokens=CharCounter())
    assert window.first_turn == 3
    assert prompt_text(window.prompt).count("### Instruction:") == 1


async def test_input_too_long_when_the_last_turn_alone_does_not_fit() -> None:
    need = cost(ALPACA, None, TURNS, 4)
    with pytest.raises(InputTooLong) as caught:
        await fit_window(ALPACA, None, TURNS, budget=need - 1, count_tokens=CharCounter())
    message = str(caught.value)
    assert f"needs {need} tokens" in message
    assert f"{need - 1} are available" in message
    assert isinstance(caught.value, UserError)


async def test_a_long_system_prompt_counts_against_the_budget() -> None:
    system = "Be extremely thorough. " * 20
    need = cost(ALPACA, system, TURNS, 4)
    assert (await fit_window(ALPACA, system, TURNS, budget=need,
                      count_tokens=CharCounter())).first_turn == 4
    with pytest.raises(InputTooLong):
        await fit_window(ALPACA, system, TURNS, budget=need - 1, count_tokens=CharCounter())


async def test_a_window_needs_a_user_turn() -> None:
    with pytest.raises(ValueError):
        await fit_window(ALPACA, None, [], budget=100, count_tokens=CharCounter())
    with pytest.raises(ValueError):
        await fit_window(ALPACA, None, [Turn("assistant", "hi")], budget=100,
                   count_tokens=CharCounter())


@pytest.mark.parametrize("seed", range(3))
async def test_the_search_agrees_with_trying_every_start(seed: int) -> None:
    turns = conversation(41, seed)
    costs = {i: cost(ALPACA, None, turns, i) for i, t in enumerate(turns) if t.role == "user"}
    # Every boundary: one token short of a start, exactly its cost, one more.
    budgets = sorted({need + delta for need in costs.values() for delta in (-1, 0, 1)})
    for budget in budgets:
        fitting = [start for start, need in costs.items() if need <= budget]
        if not fitting:
            with pytest.raises(InputTooLong):
                await fit_window(ALPACA, None, turns, budget=budget, count_tokens=CharCounter())
            continue
        window = await fit_window(ALPACA, None, turns, budget=budget, count_tokens=CharCounter())
        assert window.first_turn == min(fitting)
        assert window.n_tokens == costs[min(fitting)]


@pytest.mark.parametrize("fmt", [ALPACA, JinjaFormat(CHATML)], ids=["alpaca", "chatml"])
async def test_the_number_of_tokenizations_is_logarithmic(fmt: ChatFormat) -> None:
    turns = conversation(1000)
    users = [i for i, turn in enumerate(turns) if turn.role == "user"]
    allowed = math.ceil(math.log2(len(users))) + 2
    counter = WordCounter()
    everything = await counter(fmt.render(None, turns))
    last_only = await counter(fmt.render(None, turns[users[-1]:]))
    for budget, first in [
        (everything, 0),
        (last_only, users[-1]),
        ((everything + last_only) // 2, None),
    ]:
        counter = WordCounter()
        window = await fit_window(fmt, None, turns, budget=budget, count_tokens=counter)
        assert counter.calls <= allowed
        if first is not None:
            assert window.first_turn == first
        assert window.n_tokens <= budget
    counter = WordCounter()
    with pytest.raises(InputTooLong):
        await fit_window(fmt, None, turns, budget=last_only - 1, count_tokens=counter)
    assert counter.calls <= allowed

"""The context window: the newest turns that fit the token budget, cut at user turns, found from
the newest turn back at a cost that follows the window, not the history."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator, Sequence

import pytest

from bot.core.prompt import Prompt, Turn, prompt_text
from bot.core.templates import AlpacaFormat, ChatFormat, JinjaFormat
from bot.core.window import NoQuestion, Window, fit_window
from bot.errors import InputTooLong, UserError

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class CharCounter:
    """A deterministic tokenizer: one token per character of the prompt; counts its calls and
    the characters it was given."""

    def __init__(self) -> None:
        self.calls = 0
        self.characters = 0

    async def __call__(self, prompt: Prompt) -> int:
        self.calls += 1
        self.characters += len(prompt_text(prompt))
        return len(prompt_text(prompt))


class WordCounter(CharCounter):
    async def __call__(self, prompt: Prompt) -> int:
        await super().__call__(prompt)
        return len(prompt_text(prompt).split())


class NewestFirst:
    """The turns from the newest back, as the store hands them out; counts how many were read."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self.turns = turns
        self.read = 0

    async def __call__(self) -> AsyncGenerator[Turn, None]:
        for turn in reversed(self.turns):
            self.read += 1
            yield turn


async def fit(
    fmt: ChatFormat, system: str | None, turns: Sequence[Turn], budget: int,
    counter: CharCounter | None = None,
) -> Window:
    return await fit_window(fmt, system, NewestFirst(turns)(), budget=budget,
                            count_tokens=counter or CharCounter())


async def first_kept(fmt: ChatFormat, system: str | None, turns: Sequence[Turn],
                     budget: int) -> int:
    """Where in `turns` the window starts."""
    window = await fit(fmt, system, turns, budget)
    assert window.turns == tuple(turns[len(turns) - len(window.turns):])
    return len(turns) - len(window.turns)


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
    window = await fit(ALPACA, "Be brief.", TURNS, cost(ALPACA, "Be brief.", TURNS, 0))
    assert window.system == "Be brief."
    window = await fit(ALPACA, None, TURNS, full)
    assert window.turns == tuple(TURNS)
    assert not window.left_out
    assert window.n_tokens == full
    assert window.budget == full
    assert window.prompt == ALPACA.render(None, TURNS)


async def test_one_token_less_drops_the_oldest_question_and_its_answer() -> None:
    full = cost(ALPACA, None, TURNS, 0)
    window = await fit(ALPACA, None, TURNS, full - 1)
    assert window.turns == tuple(TURNS[2:]) and window.left_out
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
        assert await first_kept(fmt, system, TURNS, exact) == start
        if earlier is not None:
            # Enough for this start but one token short of the previous one.
            budget = cost(fmt, system, TURNS, earlier) - 1
            assert await first_kept(fmt, system, TURNS, budget) == start


async def test_the_window_never_starts_at_an_assistant_turn() -> None:
    turns = [
        Turn("assistant", "a reply to a question deleted long ago"),
        Turn("user", "q1"),
        Turn("assistant", "a much longer answer than any question " * 3),
        Turn("user", "q2"),
    ]
    roomy = await fit(ALPACA, "", turns, 10_000)
    assert roomy.turns == tuple(turns[1:]) and roomy.left_out
    # A budget for "answer + q2" but not "q1 + answer + q2" does not start at the answer.
    budget = cost(ALPACA, "", turns, 2) + 5
    assert budget < cost(ALPACA, "", turns, 1)
    tight = await fit(ALPACA, "", turns, budget)
    assert tight.turns == tuple(turns[3:])
    assert tight.prompt == ALPACA.render("", turns[3:])


async def test_the_last_turn_is_always_in_the_window() -> None:
    last_only = cost(ALPACA, None, TURNS, 4)
    window = await fit(ALPACA, None, TURNS, last_only)
    assert window.turns == (TURNS[4],)
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
    assert await first_kept(ALPACA, None, turns, both) == 2
    window = await fit(ALPACA, None, turns, both - 1)
    assert window.turns == (turns[3],)
    assert prompt_text(window.prompt).count("### Instruction:") == 1


async def test_input_too_long_when_the_last_turn_alone_does_not_fit() -> None:
    need = cost(ALPACA, None, TURNS, 4)
    with pytest.raises(InputTooLong) as caught:
        await fit(ALPACA, None, TURNS, need - 1)
    message = str(caught.value)
    assert f"needs {need} tokens" in message
    assert f"{need - 1} are available" in message
    assert isinstance(caught.value, UserError)


async def test_a_long_system_prompt_counts_against_the_budget() -> None:
    system = "Be extremely thorough. " * 20
    need = cost(ALPACA, system, TURNS, 4)
    assert await first_kept(ALPACA, system, TURNS, need) == 4
    with pytest.raises(InputTooLong):
        await fit(ALPACA, system, TURNS, need - 1)


async def test_a_window_needs_a_user_turn() -> None:
    with pytest.raises(NoQuestion):
        await fit(ALPACA, None, [], 100)
    with pytest.raises(NoQuestion):
        await fit(ALPACA, None, [Turn("assistant", "hi")], 100)


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
                await fit(ALPACA, None, turns, budget)
            continue
        window = await fit(ALPACA, None, turns, budget)
        assert len(turns) - len(window.turns) == min(fitting)
        assert window.n_tokens == costs[min(fitting)]
        assert window.left_out == (min(fitting) > 0)


@pytest.mark.parametrize("fmt", [ALPACA, JinjaFormat(CHATML)], ids=["alpaca", "chatml"])
async def test_the_number_of_tokenizations_is_logarithmic_in_the_window(fmt: ChatFormat) -> None:
    turns = conversation(1000)
    users = [i for i, turn in enumerate(turns) if turn.role == "user"]
    counter = WordCounter()
    everything = await counter(fmt.render(None, turns))
    last_only = await counter(fmt.render(None, turns[users[-1]:]))
    for budget, first in [
        (everything, 0),
        (last_only, users[-1]),
        ((everything + last_only) // 2, None),
    ]:
        counter = WordCounter()
        window = await fit(fmt, None, turns, budget, counter)
        questions = sum(turn.role == "user" for turn in window.turns)
        assert counter.calls <= 2 * math.ceil(math.log2(questions + 1)) + 2
        if first is not None:
            assert len(turns) - len(window.turns) == first
        assert window.n_tokens <= budget
    counter = WordCounter()
    with pytest.raises(InputTooLong):
        await fit(fmt, None, turns, last_only - 1, counter)
    assert counter.calls == 1


async def test_what_a_window_costs_follows_the_window_not_the_history() -> None:
    """10,000 turns of ~4000 characters, a budget of a few of them: only turns near the window
    are read, and only prompts near its size are tokenized."""
    long = [Turn("user" if i % 2 == 0 else "assistant", f"{i} " + "x" * 4000)
            for i in range(10_000)]
    long.append(Turn("user", "the question"))
    budget = cost(ALPACA, None, long, len(long) - 5) + 100  # the last five turns and a bit
    counter, source = CharCounter(), NewestFirst(long)
    window = await fit_window(ALPACA, None, source(), budget=budget, count_tokens=counter)
    assert window.turns == tuple(long[-5:]) and window.left_out
    assert source.read <= 2 * len(window.turns) + 2
    assert counter.characters <= 6 * budget

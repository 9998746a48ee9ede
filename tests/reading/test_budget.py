"""A question's passages within `document_tokens`: the best that fit, counted as the model
reads them, never more than the budget."""

from __future__ import annotations

from bot.reading.budget import choose_passages
from bot.reading.context import FramedPassage, passages_block


async def count_words(text: str) -> int:
    """A stand-in tokenizer: one token a word."""
    return len(text.split())


def passage(n: int, words: int) -> FramedPassage:
    return FramedPassage(f"doc.txt, line {n}", " ".join(["word"] * words))


async def test_the_best_passages_that_fit_join_in_rank_order() -> None:
    ranked = [passage(1, 40), passage(2, 100), passage(3, 30), passage(4, 5)]
    chosen, used = await choose_passages(ranked, budget=120, count=count_words)
    assert [p.label for p in chosen] == ["doc.txt, line 1", "doc.txt, line 3",
                                         "doc.txt, line 4"]
    assert used == await count_words(passages_block(chosen)) <= 120


async def test_never_more_than_the_budget() -> None:
    ranked = [passage(n, 37) for n in range(30)]
    for budget in (50, 120, 333, 1000):
        chosen, used = await choose_passages(ranked, budget=budget, count=count_words)
        assert used <= budget
        assert used == await count_words(passages_block(chosen))


async def test_a_passage_too_long_alone_is_cut_to_fit() -> None:
    chosen, used = await choose_passages([passage(1, 500)], budget=60, count=count_words)
    assert len(chosen) == 1 and chosen[0].text.endswith("…")
    assert 40 < used <= 60


async def test_no_passages_no_tokens() -> None:
    assert await choose_passages([], budget=100, count=count_words) == ([], 0)
    assert await choose_passages([passage(1, 50)], budget=5, count=count_words) == ([], 0)

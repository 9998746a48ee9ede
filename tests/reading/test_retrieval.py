"""BM25 over words and over Chinese character bigrams: the passages that share a question's
terms, best first; none for a question about something else."""

from __future__ import annotations

from bot.reading.retrieval import PassageIndex, terms

TEXTS = [
    "The llama eats grass and hay; llamas live in the Andes.",
    "数据库连接失败，请检查配置文件中的端口。",
    "Alpacas are smaller than llamas and are kept for their wool.",
    "羊驼的毛很柔软，可以用来做毛衣。",
    "The invoice total is 4,200 euros, due on 31 March.",
]


def test_terms_are_words_and_chinese_bigrams() -> None:
    assert terms("Llamas EAT grass") == ["llama", "eat", "grass"]
    assert terms("数据库连接") == ["数据", "据库", "库连", "连接"]
    assert terms("the and what 什么") == []  # stopwords alone are no question
    assert terms("羊") == ["羊"]


def test_english_question_finds_its_passages_best_first() -> None:
    index = PassageIndex(TEXTS)
    hits = index.search("What do llamas eat?")
    assert hits[0].index == 0
    assert {hit.index for hit in hits} == {0, 2}
    assert hits[0].score > hits[1].score


def test_chinese_question_finds_chinese_passages() -> None:
    index = PassageIndex(TEXTS)
    assert index.search("数据库为什么连接失败？")[0].index == 1
    assert index.search("羊驼毛")[0].index == 3


def test_an_unrelated_question_gets_nothing() -> None:
    index = PassageIndex(TEXTS)
    assert index.search("How is the weather today?") == []
    assert index.search("") == []
    assert PassageIndex([]).search("llamas") == []


def test_search_within_some_passages_and_limit() -> None:
    index = PassageIndex(TEXTS)
    assert [hit.index for hit in index.search("llamas", within={2})] == [2]
    assert len(index.search("llamas", limit=1)) == 1

"""A document's text cut into passages of whole lines, each knowing its page or lines."""

from __future__ import annotations

from bot.reading.passages import PASSAGE_CHARS, Passage, Section, passage_label, split_passages


def test_short_lines_gather_into_passages_of_bounded_size() -> None:
    text = "\n".join(f"Line {n}: llamas are camelids from South America." for n in range(1, 101))
    passages = split_passages([Section(text)])
    assert len(passages) > 5
    assert all(len(p.text) <= PASSAGE_CHARS for p in passages)
    assert [p.seq for p in passages] == list(range(len(passages)))
    assert passages[0].first == 1 and passages[-1].last == 100
    for before, after in zip(passages, passages[1:], strict=False):
        assert after.first == before.last + 1  # nothing lost, nothing repeated
    assert "\n".join(p.text for p in passages) == text


def test_a_paragraph_break_ends_a_half_full_passage() -> None:
    first = "\n".join(["alpha " * 20] * 2)
    text = first + "\n\n" + "beta line\n" * 3
    passages = split_passages([Section(text)])
    assert passages[0].text == first.rstrip().replace(" \n", "\n")
    assert passages[1].first == 4 and passages[1].text.startswith("beta")


def test_a_long_chinese_line_is_cut_at_sentence_ends() -> None:
    sentence = "羊驼是一种温顺的动物，生活在南美洲的高原上。"
    passages = split_passages([Section(sentence * 60)])
    assert len(passages) > 2
    assert all(len(p.text) <= PASSAGE_CHARS for p in passages)
    assert all(p.text.endswith("。") for p in passages[:-1])
    assert all(p.first == p.last == 1 for p in passages)
    assert "".join(p.text for p in passages) == sentence * 60


def test_pdf_pages_keep_their_numbers() -> None:
    passages = split_passages([Section("page one text", 1), Section("", 2),
                               Section("page three\nmore", 3)])
    assert [(p.page, p.text) for p in passages] == [(1, "page one text"),
                                                   (3, "page three\nmore")]


def test_labels_name_the_document_and_the_place() -> None:
    assert passage_label("report.pdf", Passage(0, "x", 3, 1, 9), "page") == "report.pdf, page 3"
    assert passage_label("notes.txt", Passage(0, "x", None, 10, 25), "line") == (
        "notes.txt, lines 10-25")
    assert passage_label("a.docx", Passage(0, "x", None, 4, 4), "paragraph") == (
        "a.docx, paragraph 4")

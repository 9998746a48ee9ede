"""The rule of the demo model's note: Chinese askers, the demo model running, once per chat."""

from __future__ import annotations

from pathlib import Path

from bot.chat.demo_notice import DEMO_CANNOT_ANSWER_CHINESE, DemoModelNotice, written_in_chinese
from bot.i18n import _, speaking


def test_a_question_is_chinese_by_its_han_characters_not_kana() -> None:
    assert written_in_chinese("骆驼是什么动物？")
    assert written_in_chinese("What does 你好 mean?")
    assert not written_in_chinese("What does 好 mean?")  # one character may be a name
    assert not written_in_chinese("What is a llama?")
    assert not written_in_chinese("ラマは何ですか？動物")  # Japanese: kanji with kana


def test_the_note_comes_once_per_chat_and_only_on_the_demo_model(tmp_path: Path) -> None:
    demo = tmp_path / "demo.gguf"
    demo.write_bytes(b"")
    link = tmp_path / "models" / "demo.gguf"
    link.parent.mkdir()
    link.symlink_to(demo)  # the models directory links to the demo model
    other = tmp_path / "other.gguf"
    running = [link]
    notice = DemoModelNotice(lambda: running[0], demo_model=demo)
    with speaking("zh"):
        line = _(DEMO_CANNOT_ANSWER_CHINESE)
        assert notice.note(1, "hello", None) == line
        assert notice.note(1, "你好你好", None) is None
        assert notice.note(2, "hi", "⏹ stopped") == f"{line}\n⏹ stopped"
        running[0] = other
        assert notice.note(3, "你好你好", None) is None
    running[0] = link
    with speaking("en"):
        assert notice.note(4, "What is a llama?", None) is None
        assert notice.note(4, "骆驼是什么？", None) == _(DEMO_CANNOT_ANSWER_CHINESE)


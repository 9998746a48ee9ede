"""`list_gguf_files`: a models directory as /model lists it, each file's header read."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ModelError
from bot.models.library import list_gguf_files
from tests.llama.test_gguf_file import write_small_gguf


def test_listing_a_models_directory(tmp_path: Path, demo_model: Path) -> None:
    (tmp_path / "demo.gguf").symlink_to(demo_model)
    write_small_gguf(tmp_path / "B-small.gguf", file_type=1)
    (tmp_path / "broken.gguf").write_bytes(b"not a model")
    (tmp_path / "notes.txt").write_text("not listed")
    (tmp_path / "dangling.gguf").symlink_to(tmp_path / "gone.gguf")
    (tmp_path / "subdir.gguf").mkdir()
    entries = list_gguf_files(tmp_path)
    assert [e.path.name for e in entries] == ["B-small.gguf", "broken.gguf", "demo.gguf"]
    small, broken, demo = entries
    assert (demo.file_type_name, demo.size_bytes, demo.error) == (
        "Q4_1", demo_model.stat().st_size, None)
    assert small.file_type_name == "F16"
    assert broken.file_type_name == "invalid"
    assert broken.error is not None and "not a GGUF" in broken.error
    with pytest.raises(ModelError, match="not a directory"):
        list_gguf_files(tmp_path / "notes.txt")

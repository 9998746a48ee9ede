"""`read_gguf_info`: GGUF headers of the demo model and of small files written with the `gguf`
package, and the errors for files that are not (sound) GGUF."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from bot.errors import ModelError
from bot.llama.gguf_file import FILE_TYPE_NAMES, check_gguf_magic, read_gguf_info


def write_small_gguf(path: Path, *, file_type: int | None = None, arch: str = "llama",
                     dtype: type = np.float16) -> Path:
    """A header-only-sized GGUF with two matrices and a norm (not a loadable model)."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(4096)
    writer.add_uint32("test.number", 7)
    writer.add_token_list(["<unk>", "<s>", "</s>", "a", "b"])
    if file_type is not None:
        writer.add_file_type(file_type)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((5, 64)).astype(dtype))
    writer.add_tensor("blk.0.attn_q.weight", rng.standard_normal((64, 64)).astype(dtype))
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_demo_model_header(demo_model: Path) -> None:
    info = read_gguf_info(demo_model)
    assert info.architecture == "llama"
    assert info.file_type == 3
    assert info.file_type_name == "Q4_1"
    assert info.tensor_count == 272
    assert info.context_length == 8192
    assert info.size_bytes == demo_model.stat().st_size
    assert 130_000_000 < info.parameter_count < 140_000_000  # SmolLM2-135M
    assert "Q4_1" in info.quantized_types
    assert info.metadata["llama.block_count"] == 30
    assert "tokenizer.ggml.tokens" not in info.metadata  # arrays are skipped, not decoded
    # The header and the tensors account for every byte of the file.
    assert info.data_offset + sum(t.n_bytes for t in info.tensors) == info.size_bytes


def test_small_file_written_by_gguf(tmp_path: Path) -> None:
    path = write_small_gguf(tmp_path / "small.gguf", file_type=1)
    info = read_gguf_info(path)
    assert info.version == 3
    assert info.file_type_name == "F16"
    assert info.tensor_count == 3
    assert info.parameter_count == 5 * 64 + 64 * 64 + 64
    assert info.metadata["test.number"] == 7
    assert info.context_length == 4096
    assert info.quantized_types == frozenset()
    tensors = {t.name: t for t in info.tensors}
    assert tensors["token_embd.weight"].shape == (64, 5)  # ggml order: row length first
    assert tensors["output_norm.weight"].type_name == "F32"
    assert info.size_bytes == path.stat().st_size


def test_file_type_is_guessed_from_tensors_when_missing(tmp_path: Path) -> None:
    info = read_gguf_info(write_small_gguf(tmp_path / "nokey.gguf"))
    assert info.file_type is None
    assert info.file_type_name == "F16 (guessed)"


def test_every_llama_ftype_has_a_name() -> None:
    import llama_cpp

    for name in dir(llama_cpp):
        if name.startswith("LLAMA_FTYPE_") and name != "LLAMA_FTYPE_GUESSED":
            value = getattr(llama_cpp, name)
            expected = name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_")
            assert FILE_TYPE_NAMES[value] == expected


@pytest.mark.parametrize(("content", "message"), [
    (b"hello, this is text", "not a GGUF file"),
    (b"tjgg\x01\x00\x00\x00rest of an old file", "old GGML"),
    (b"", "not a GGUF file"),
])
def test_not_gguf_is_a_clear_model_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        read_gguf_info(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        check_gguf_magic(tmp_path / "absent.gguf")
    with pytest.raises(ModelError, match="directory"):
        read_gguf_info(tmp_path)


def test_truncated_files_are_reported(tmp_path: Path, demo_model: Path) -> None:
    head = demo_model.read_bytes()[:3_000_000]
    cut_in_data = tmp_path / "cut-data.gguf"
    cut_in_data.write_bytes(head)
    with pytest.raises(ModelError, match="truncated"):
        read_gguf_info(cut_in_data)
    cut_in_header = tmp_path / "cut-header.gguf"
    cut_in_header.write_bytes(head[:100_000])
    with pytest.raises(ModelError, match="truncated"):
        read_gguf_info(cut_in_header)


def test_garbage_after_magic_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 2**60) + b"\x00" * 64)
    with pytest.raises(ModelError, match="corrupt"):
        read_gguf_info(path)
    path.write_bytes(b"GGUF" + struct.pack("<I", 1) + b"\x00" * 64)
    with pytest.raises(ModelError, match="version 1"):
        read_gguf_info(path)

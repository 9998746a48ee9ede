"""`quantize_model`: llama.cpp's quantizer in a child process, on the demo model and tiny files.

Crashes and hangs of the child are produced with a stand-in `llama_cpp` package put first on
the child's PYTHONPATH, so the real child code path runs and only llama.cpp is replaced.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from bot.errors import QuantizeError
from bot.llama.gguf_file import read_gguf_info
from bot.llama.loading import high_level_model_params
from bot.models.quant_types import QUANT_TYPES, QuantType, parse_quant_type
from bot.models.quantize import QuantizeResult, quantize_model, quantize_model_async
from bot.models.quantize_output import default_output_path, estimate_output_size
from bot.models.quantizer_process import QuantizeProgress
from tests.cpu import THREADS

pytestmark = pytest.mark.timeout(180)


def write_tiny_llama(path: Path, *, arch: str = "llama", dim: int = 256, ffn: int = 512,
                     vocab: int = 64) -> Path:
    """An F16 one-layer LLaMA-shaped GGUF: enough for llama.cpp's quantizer, not for chat."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(256)
    writer.add_embedding_length(dim)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([1] * vocab)
    rng = np.random.default_rng(0)

    def matrix(rows: int, cols: int) -> Any:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    writer.add_tensor("token_embd.weight", matrix(vocab, dim))
    writer.add_tensor("output_norm.weight", np.ones(dim, np.float32))
    writer.add_tensor("output.weight", matrix(vocab, dim))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(dim, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", matrix(dim, dim))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(dim, np.float32))
    writer.add_tensor("blk.0.ffn_gate.weight", matrix(ffn, dim))
    writer.add_tensor("blk.0.ffn_up.weight", matrix(ffn, dim))
    writer.add_tensor("blk.0.ffn_down.weight", matrix(dim, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# A stand-in for llama_cpp in the child: logs one tensor line like llama.cpp, then misbehaves.
FAKE_LLAMA_CPP = textwrap.dedent("""
    import ctypes, os, sys, time

    llama_log_callback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    _callback = None

    class llama_model_quantize_params(ctypes.Structure):
        _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int),
                    ("allow_requantize", ctypes.c_bool)]

    def llama_log_set(callback, user_data):
        global _callback
        _callback = callback

    def llama_model_quantize_default_params():
        return llama_model_quantize_params()

    def llama_model_quantize(src, dst, params):
        open(dst, "wb").write(b"GGUF partial output")
        _callback(2, b"[   1/   3] blk.0.attn_q.weight - [ 256, 256], type = f16, ", None)
        _callback(2, b"converting to q4_0 .. size = 0.12 MiB -> 0.04 MiB\\n", None)
        if os.environ["FAKE_QUANTIZER"] == "abort":
            sys.stderr.write("GGML_ASSERT(fake condition) failed\\n")
            sys.stderr.flush()
            os.abort()
        time.sleep(120)
        return 0
""")


@pytest.fixture
def fake_llama_cpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    package = tmp_path / "fake-site" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_LLAMA_CPP)
    monkeypatch.setenv("PYTHONPATH", str(package.parent))
    yield


@pytest.fixture(scope="module")
def requantized(demo_model: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, tuple[QuantizeResult, list[QuantizeProgress]]]:
    """The demo model (Q4_1) requantized to q4_0 and q8_0, with the progress reported."""
    folder = tmp_path_factory.mktemp("requantized")
    results = {}
    for name in ("q4_0", "q8_0"):
        progress: list[QuantizeProgress] = []
        result = quantize_model(demo_model, folder / f"demo-{name}.gguf", name, threads=THREADS,
                                allow_requantize=True, on_progress=progress.append)
        results[name] = (result, progress)
    return results


def names_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# -- types ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("q4_0", QuantType.Q4_0), ("Q4_K_M", QuantType.Q4_K_M), (" q8_0 ", QuantType.Q8_0),
    ("2", QuantType.Q4_0), ("3", QuantType.Q4_1), ("15", QuantType.Q4_K_M), (7, QuantType.Q8_0),
    (QuantType.Q6_K, QuantType.Q6_K), ("F16", QuantType.F16), ("bf16", QuantType.BF16),
])
def test_parse_quant_type(text: str | int | QuantType, expected: QuantType) -> None:
    assert parse_quant_type(text) is expected


@pytest.mark.parametrize("text", ["q9_9", "5", "99", "", "q4"])
def test_parse_quant_type_lists_the_choices(text: str) -> None:
    with pytest.raises(QuantizeError) as caught:
        parse_quant_type(text)
    message = str(caught.value)
    assert "choose one of" in message
    assert "q4_0 (2)" in message and "q4_1 (3)" in message and "q4_k_m (15)" in message


def test_types_needing_an_importance_matrix_are_refused_with_the_reason() -> None:
    for name in ("iq2_xxs", "IQ3_XS", "q2_k_s", "iq1_m"):
        with pytest.raises(QuantizeError, match="importance matrix"):
            parse_quant_type(name)


def test_quant_types_are_llama_cpp_ftypes() -> None:
    import llama_cpp

    assert QUANT_TYPES["q4_0"] == 2 and QUANT_TYPES["q4_1"] == 3
    for name, qtype in QUANT_TYPES.items():
        prefix = "LLAMA_FTYPE_ALL_" if name == "f32" else "LLAMA_FTYPE_MOSTLY_"
        assert getattr(llama_cpp, prefix + name.upper()) == qtype, name
        assert qtype.label == name and qtype.description and qtype.bits_per_weight > 0


@pytest.mark.parametrize(("name", "qtype", "expected"), [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "q4_0", "SmolLM2-135M-Instruct.Q4_0.gguf"),
    ("ggml-model-f16.gguf", "q4_k_m", "ggml-model-q4_k_m.gguf"),
    ("alpaca-7b.gguf", "2", "alpaca-7b-q4_0.gguf"),
    ("model_Q8_0.GGUF", "q5_1", "model_Q5_1.gguf"),
])
def test_default_output_path(name: str, qtype: str, expected: str) -> None:
    assert default_output_path(Path("/models") / name, qtype) == Path("/models") / expected


# -- quantizing the demo model ------------------------------------------------------------------

@pytest.mark.model
@pytest.mark.parametrize("name", ["q4_0", "q8_0"])
def test_requantized_demo_model_loads_and_generates(
    requantized: dict[str, tuple[QuantizeResult, list[QuantizeProgress]]],
    demo_model: Path, name: str,
) -> None:
    import llama_cpp

    result, _ = requantized[name]
    assert result.qtype == parse_quant_type(name)
    assert result.size_before == demo_model.stat().st_size
    assert result.size_after == result.output.stat().st_size
    assert result.tensor_count == 272 and result.seconds > 0
    info = read_gguf_info(result.output)
    assert info.file_type_name == name.upper()
    assert result.size_after <= estimate_output_size(read_gguf_info(demo_model), name)
    assert names_in(result.output.parent) >= {result.output.name}
    assert not [p for p in result.output.parent.iterdir() if p.name.endswith(".part")]
    with high_level_model_params():
        llama = llama_cpp.Llama(str(result.output), n_ctx=128, n_threads=THREADS, verbose=False)
    try:
        completion = llama.create_completion("The capital of France is", max_tokens=4,
                                             temperature=0.0)
        assert completion["usage"]["completion_tokens"] >= 1
        assert completion["choices"][0]["text"].strip()
    finally:
        llama.close()


@pytest.mark.model
def test_progress_counts_every_tensor(
    requantized: dict[str, tuple[QuantizeResult, list[QuantizeProgress]]],
) -> None:
    _, progress = requantized["q4_0"]
    assert [p.tensor_index for p in progress] == list(range(1, 273))
    assert {p.tensor_count for p in progress} == {272}
    assert len({p.tensor_name for p in progress}) == 272
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    elapsed = [p.elapsed for p in progress]
    assert elapsed == sorted(elapsed)
    assert progress[0].eta is None and progress[-1].eta == pytest.approx(0.0, abs=1e-6)


def test_f16_input_needs_no_allow_requantize(tmp_path: Path) -> None:
    source = write_tiny_llama(tmp_path / "tiny-f16.gguf")
    result = quantize_model(source, tmp_path / "tiny-q4_0.gguf", "q4_0", threads=1)
    assert read_gguf_info(result.output).file_type_name == "Q4_0"
    assert result.size_after < result.size_before
    # An existing output is replaced.
    again = quantize_model(source, result.output, "q8_0", threads=1)
    assert read_gguf_info(again.output).file_type_name == "Q8_0"
    assert names_in(tmp_path) == {"tiny-f16.gguf", "tiny-q4_0.gguf"}


# -- refusals ----------------------------------------------------------------------------------

def test_requantizing_is_refused_without_the_flag(demo_model: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="--allow-requantize") as caught:
        quantize_model(demo_model, tmp_path / "out.gguf", "q4_0")
    assert "Q4_1" in str(caught.value)
    assert names_in(tmp_path) == set()


def test_output_equal_to_input_is_refused(demo_model: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="is the input"):
        quantize_model(demo_model, demo_model, "q8_0", allow_requantize=True)
    link = tmp_path / "same.gguf"
    link.symlink_to(demo_model)
    with pytest.raises(QuantizeError, match="is the input"):
        quantize_model(demo_model, link, "q8_0", allow_requantize=True)
    source = write_tiny_llama(tmp_path / "tiny.gguf")
    os.link(source, tmp_path / "hardlink.gguf")
    with pytest.raises(QuantizeError, match="is the input"):
        quantize_model(source, tmp_path / "hardlink.gguf", "q4_0")


def test_not_gguf_input_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"\x00" * 1024)
    with pytest.raises(QuantizeError, match="not a GGUF file"):
        quantize_model(source, tmp_path / "out.gguf", "q4_0")
    with pytest.raises(QuantizeError, match="not found"):
        quantize_model(tmp_path / "absent.gguf", tmp_path / "out.gguf", "q4_0")
    assert names_in(tmp_path) == {"model.bin"}


def test_bad_output_locations_are_refused(demo_model: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="does not exist"):
        quantize_model(demo_model, tmp_path / "no" / "out.gguf", "q8_0", allow_requantize=True)
    with pytest.raises(QuantizeError, match="is a directory"):
        quantize_model(demo_model, tmp_path, "q8_0", allow_requantize=True)


def test_too_little_disk_space_is_refused(demo_model: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: real._replace(free=50_000_000))
    with pytest.raises(QuantizeError) as caught:
        quantize_model(demo_model, tmp_path / "out.gguf", "q8_0", allow_requantize=True)
    message = str(caught.value)
    assert "not enough disk space" in message
    assert "needs about 1" in message and "50.0 MB is free" in message  # ~160 MB vs 50 MB
    assert names_in(tmp_path) == set()


# -- failures of the child -------------------------------------------------------------------

def test_llama_cpp_error_becomes_quantize_error(tmp_path: Path) -> None:
    source = write_tiny_llama(tmp_path / "odd.gguf", arch="nosucharch")
    with pytest.raises(QuantizeError, match="unknown model architecture") as caught:
        quantize_model(source, tmp_path / "out.gguf", "q4_0")
    assert "last output" in str(caught.value)
    assert names_in(tmp_path) == {"odd.gguf"}


def test_child_crash_becomes_quantize_error_and_leaves_nothing(
    demo_model: Path, tmp_path: Path, fake_llama_cpp: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_QUANTIZER", "abort")
    out = tmp_path / "out"
    out.mkdir()
    progress: list[QuantizeProgress] = []
    with pytest.raises(QuantizeError, match="crashed \\(SIGABRT\\)") as caught:
        quantize_model(demo_model, out / "demo.gguf", "q4_0", allow_requantize=True,
                       on_progress=progress.append)
    message = str(caught.value)
    assert "GGML_ASSERT(fake condition) failed" in message
    assert "blk.0.attn_q.weight" in message
    assert [p.tensor_name for p in progress] == ["blk.0.attn_q.weight"]
    assert names_in(out) == set()


def test_cancel_kills_the_child_and_leaves_nothing(
    demo_model: Path, tmp_path: Path, fake_llama_cpp: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_QUANTIZER", "hang")
    cancel = threading.Event()
    started = time.monotonic()
    with pytest.raises(QuantizeError, match="cancelled"):
        quantize_model(demo_model, tmp_path / "demo.gguf", "q4_0", allow_requantize=True,
                       on_progress=lambda _: cancel.set(), cancel=cancel)
    assert time.monotonic() - started < 30  # the fake would sleep 120 s
    assert names_in(tmp_path) == {"fake-site"}


# -- the async wrapper -----------------------------------------------------------------------

@pytest.mark.model
async def test_async_progress_arrives_on_the_loop_while_it_stays_responsive(
    demo_model: Path, tmp_path: Path,
) -> None:
    loop_thread = threading.get_ident()
    seen: list[tuple[int, int]] = []
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    try:
        result = await quantize_model_async(
            demo_model, tmp_path / "demo-q4_0.gguf", "q4_0", threads=THREADS, allow_requantize=True,
            on_progress=lambda p: seen.append((threading.get_ident(), p.tensor_index)),
        )
    finally:
        done.set()
        await ticking
    assert result.output.exists()
    assert [index for _, index in seen] == list(range(1, 273))
    assert {thread for thread, _ in seen} == {loop_thread}
    # The loop kept running during the whole job (about half a second or more).
    assert ticks >= 20


async def test_cancelling_the_async_task_kills_the_child(
    demo_model: Path, tmp_path: Path, fake_llama_cpp: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_QUANTIZER", "hang")
    first = asyncio.Event()
    task = asyncio.create_task(quantize_model_async(
        demo_model, tmp_path / "demo.gguf", "q4_0", allow_requantize=True,
        on_progress=lambda _: first.set(),
    ))
    await asyncio.wait_for(first.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert names_in(tmp_path) == {"fake-site"}

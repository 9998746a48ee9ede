"""`convert_checkpoint`: Meta and Hugging Face LLaMA checkpoints to GGUF.

The main cases convert a tiny random checkpoint and compare llama.cpp's logits on the result with
a numpy forward pass over the original weights; the rest check refusals, cleanup and metadata.
"""

from __future__ import annotations

import errno
import json
import math
import struct
from collections.abc import Callable, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import gguf
import jinja2
import jinja2.sandbox
import llama_cpp
import numpy as np
import pytest
import safetensors.numpy
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from numpy.typing import NDArray

import bot.models.convert as convert_module
from bot.core.prompt import Turn, prompt_text
from bot.core.templates import AlpacaFormat, JinjaFormat
from bot.errors import ConversionError
from bot.llama.loading import high_level_model_params
from bot.models.convert import ALPACA_CHAT_TEMPLATE, convert_checkpoint
from bot.models.lazy_tensor import FileRange, LazyTensor
from bot.models.progress import byte_progress
from bot.models.safetensors_file import read_safetensors
from bot.models.sentencepiece_model import read_sentencepiece
from bot.models.torch_checkpoint import read_torch_checkpoint
from tests.cpu import THREADS
from tests.models.checkpoints import (
    StoredTensor,
    TinyConfig,
    encode,
    malicious_entry,
    round_to,
    tampered_entry,
    write_torch_zip,
)
from tests.models.reference import forward

Checkpoint = tuple[Path, TinyConfig, dict[str, NDArray[Any]]]
Factory = Callable[..., Checkpoint]

# A prompt touching ordinary, byte-fallback, control and last-row tokens.
TOKENS = [1, 5, 40, 100, 270, 300, 17, 359, 3, 200, 12, 8, 64, 2, 333, 31]


def llama_logits(model: Path, tokens: Sequence[int], *, f32_cache: bool = False,
                 ) -> NDArray[np.float64]:
    # The KV cache is f16 by default; f32 lets an all-f32 model be compared tightly.
    cache = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if f32_cache else {}
    with high_level_model_params():
        llm = llama_cpp.Llama(str(model), logits_all=True, n_ctx=64, n_threads=THREADS, verbose=False,
                              **cache)
    try:
        llm.eval(list(tokens))
        return np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()


def assert_logits_close(got: NDArray[np.float64], ref: NDArray[np.float64],
                        rel_tol: float) -> None:
    """Max error small next to the logit scale, and the same top-1 token where it is clear."""
    scale = np.abs(ref).max()
    error = np.abs(got - ref).max()
    assert error <= rel_tol * scale, f"max |diff| {error:.4g} for logits up to {scale:.3g}"
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * error
    assert clear.any()
    np.testing.assert_array_equal(got.argmax(-1)[clear], ref.argmax(-1)[clear])


def gguf_tensors(path: Path) -> dict[str, Any]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def gguf_fields(path: Path) -> dict[str, Any]:
    return {name: field.contents() for name, field in gguf.GGUFReader(path).fields.items()
            if not name.startswith("GGUF.")}


def tokens_for(cfg: TinyConfig) -> list[int]:
    return [t for t in TOKENS if t < cfg.n_vocab]


# --- logits against the reference forward pass ------------------------------------------------


def test_meta_single_shard_matches_reference(make_meta: Factory, tmp_path: Path) -> None:
    folder, cfg, weights = make_meta()
    report = convert_checkpoint(folder, tmp_path / "out.gguf")
    assert report.layout == "meta"
    assert (report.params.n_vocab, report.params.n_ff, report.params.n_layer) == (360, 192, 2)
    assert report.n_tensors == 2 + 9 * cfg.n_layers + 1
    assert report.bytes_written == (tmp_path / "out.gguf").stat().st_size
    tokens = tokens_for(cfg)
    assert_logits_close(llama_logits(tmp_path / "out.gguf", tokens),
                        forward(weights, cfg, tokens), rel_tol=5e-3)


@pytest.mark.parametrize(
    ("n_shards", "cfg"),
    [
        (2, TinyConfig()),
        # Three shards of a wider GQA model with its own rope_theta: 2 heads and 1 kv head each.
        (3, TinyConfig(dim=96, n_heads=6, n_kv_heads=3, rope_theta=50000.0, norm_eps=1e-6)),
    ],
)
def test_meta_shards_are_merged(make_meta: Factory, tmp_path: Path, n_shards: int,
                                cfg: TinyConfig) -> None:
    folder, cfg, weights = make_meta(cfg, seed=n_shards, n_shards=n_shards)
    out = tmp_path / "out.gguf"
    convert_checkpoint(folder, out)

    tensors = gguf_tensors(out)  # bit-exact merge, before any arithmetic
    np.testing.assert_array_equal(tensors["token_embd.weight"].data, weights["tok_embeddings.weight"])
    np.testing.assert_array_equal(tensors["blk.1.attn_output.weight"].data,
                                  weights["layers.1.attention.wo.weight"])
    np.testing.assert_array_equal(tensors["blk.0.attn_k.weight"].data,
                                  weights["layers.0.attention.wk.weight"])
    tokens = tokens_for(cfg)
    assert_logits_close(llama_logits(out, tokens), forward(weights, cfg, tokens), rel_tol=5e-3)


def test_meta_padded_vocabulary_uses_added_tokens(make_meta: Factory, tmp_path: Path) -> None:
    # Chinese-Alpaca style: one embedding row more than the tokenizer, named in added_tokens.json.
    cfg = TinyConfig(n_vocab=361)
    folder, cfg, weights = make_meta(cfg, added_tokens={"[PAD]": 360})
    out = tmp_path / "out.gguf"
    convert_checkpoint(folder, out)

    fields = gguf_fields(out)
    assert len(fields["tokenizer.ggml.tokens"]) == 361
    assert fields["tokenizer.ggml.tokens"][360] == "[PAD]"
    assert fields["tokenizer.ggml.token_type"][360] == gguf.TokenType.USER_DEFINED
    assert fields["tokenizer.ggml.padding_token_id"] == 360
    tokens = [*tokens_for(cfg), 360, 7]
    assert_logits_close(llama_logits(out, tokens), forward(weights, cfg, tokens), rel_tol=5e-3)


def test_meta_grouped_query_attention_bf16(make_meta: Factory, tmp_path: Path) -> None:
    cfg = TinyConfig(n_kv_heads=2)
    folder, cfg, weights = make_meta(cfg, seed=4, dtype="BF16", rope_theta_in_params=False)
    out = tmp_path / "out.gguf"
    report = convert_checkpoint(folder, out)
    assert (report.params.n_head, report.params.n_head_kv) == (4, 2)
    assert report.params.rope_theta == 10000.0
    tokens = tokens_for(cfg)
    assert_logits_close(llama_logits(out, tokens), forward(weights, cfg, tokens), rel_tol=5e-3)


@pytest.mark.parametrize("with_index", [True, False])
def test_hf_safetensors_gqa_is_unpermuted(make_hf: Factory, tmp_path: Path,
                                          with_index: bool) -> None:
    cfg = TinyConfig(n_kv_heads=2, rope_theta=20000.0)
    folder, cfg, weights = make_hf(cfg, seed=5, n_files=2, with_index=with_index)
    out = tmp_path / "out.gguf"
    report = convert_checkpoint(folder, out)
    assert report.layout == "hf"
    assert report.params.n_ctx == 512

    tensors = gguf_tensors(out)  # back to Meta's layout exactly
    for i in range(cfg.n_layers):
        for short, meta in (("attn_q", "wq"), ("attn_k", "wk")):
            np.testing.assert_array_equal(tensors[f"blk.{i}.{short}.weight"].data,
                                          weights[f"layers.{i}.attention.{meta}.weight"])
    tokens = tokens_for(cfg)
    assert_logits_close(llama_logits(out, tokens), forward(weights, cfg, tokens), rel_tol=5e-3)


def test_hf_pytorch_bin(make_hf: Factory, tmp_path: Path) -> None:
    cfg = TinyConfig(n_kv_heads=1, n_layers=3)
    folder, cfg, weights = make_hf(cfg, seed=6, fmt="bin", n_files=2, dtype="F32")
    out = tmp_path / "out.gguf"
    convert_checkpoint(folder, out)
    tokens = tokens_for(cfg)
    # The f32 weights are rounded to f16 in the file: compare with the f16-rounded reference.
    rounded = {name: round_to(w, "F16") if w.ndim == 2 else w for name, w in weights.items()}
    assert_logits_close(llama_logits(out, tokens), forward(rounded, cfg, tokens), rel_tol=5e-3)


@pytest.mark.parametrize(("outtype", "matrix_type", "rel_tol"), [
    ("f32", gguf.GGMLQuantizationType.F32, 1e-5),
    ("q8_0", gguf.GGMLQuantizationType.Q8_0, 5e-2),
])
def test_other_outtypes_load_in_llama_cpp(make_hf: Factory, tmp_path: Path, outtype: str,
                                          matrix_type: gguf.GGMLQuantizationType,
                                          rel_tol: float) -> None:
    cfg = TinyConfig(n_ff=176)  # ffn_down rows of 176 are no whole number of q8_0 blocks
    folder, cfg, weights = make_hf(cfg, seed=7, n_files=1, dtype="F32")
    out = tmp_path / "out.gguf"
    convert_checkpoint(folder, out, outtype=outtype)

    tensors = gguf_tensors(out)
    assert tensors["blk.0.attn_q.weight"].tensor_type == matrix_type
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    expected_down = gguf.GGMLQuantizationType.F32 if outtype == "f32" else gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.ffn_down.weight"].tensor_type == expected_down
    assert gguf_fields(out)["general.file_type"] == convert_module._FILE_TYPES[outtype]
    tokens = tokens_for(cfg)
    got = llama_logits(out, tokens, f32_cache=outtype == "f32")
    assert_logits_close(got, forward(weights, cfg, tokens), rel_tol=rel_tol)


# --- refusals and cleanup ---------------------------------------------------------------------


@pytest.mark.parametrize(("module", "name"), [
    ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
    ("subprocess", "check_call"), ("torch", "load"),
])
def test_unsafe_pickle_is_refused_and_nothing_runs(make_meta: Factory, tmp_path: Path,
                                                   module: str, name: str) -> None:
    folder, cfg, weights = make_meta()
    marker = tmp_path / "pwned"
    command = {
        "system": f"touch {marker}",
        "eval": f"open({str(marker)!r}, 'w')",
        "exec": f"open({str(marker)!r}, 'w').close()",
        "check_call": f"touch {marker}",
        "load": str(marker),
    }[name]
    write_torch_zip(folder / "consolidated.00.pth", {"norm.weight": weights["norm.weight"]},
                    archive="consolidated", extra_pickle=malicious_entry(module, name, command))
    with pytest.raises(ConversionError, match=rf"unsafe pickle.*{module}\.{name}"):
        convert_checkpoint(folder, tmp_path / "out.gguf")
    assert not marker.exists()
    assert not (tmp_path / "out.gguf").exists()


def test_pickle_cannot_rewrite_a_tensor(make_meta: Factory, tmp_path: Path) -> None:
    folder, _, weights = make_meta()
    write_torch_zip(folder / "consolidated.00.pth", {"norm.weight": weights["norm.weight"]},
                    archive="consolidated", extra_pickle=tampered_entry("0", "/etc/passwd"))
    with pytest.raises(ConversionError, match="unsafe pickle .*rewrites a LazyTensor"):
        read_torch_checkpoint(folder / "consolidated.00.pth")


def test_vocab_mismatch_names_both_sizes(make_meta: Factory, tmp_path: Path) -> None:
    folder, _, _ = make_meta(TinyConfig(n_vocab=364))
    with pytest.raises(ConversionError, match=r"tokenizer.model has 360 .*364 rows"):
        convert_checkpoint(folder, tmp_path / "out.gguf")


def test_vocab_mismatch_counts_added_tokens(make_meta: Factory, tmp_path: Path) -> None:
    folder, _, _ = make_meta(TinyConfig(n_vocab=362), added_tokens={"[PAD]": 360})
    with pytest.raises(ConversionError, match=r"360 \+ 1 from added_tokens.json = 361 .*362 rows"):
        convert_checkpoint(folder, tmp_path / "out.gguf")


def test_wrong_kv_heads_in_params_is_reported(make_meta: Factory, tmp_path: Path) -> None:
    folder, _, _ = make_meta(TinyConfig(n_kv_heads=2))
    params = json.loads((folder / "params.json").read_text())
    del params["n_kv_heads"]
    (folder / "params.json").write_text(json.dumps(params))
    with pytest.raises(ConversionError, match=r"blk.0.attn_k.weight has shape \(32, 64\)"):
        convert_checkpoint(folder, tmp_path / "out.gguf")


def _fail_after(monkeypatch: pytest.MonkeyPatch, calls: int, error: BaseException) -> None:
    real = convert_module._encode
    count = 0

    def encode_then_fail(rows: NDArray[Any], qtype: gguf.GGMLQuantizationType) -> NDArray[Any]:
        nonlocal count
        count += 1
        if count > calls:
            raise error
        return real(rows, qtype)

    monkeypatch.setattr(convert_module, "_encode", encode_then_fail)


def test_disk_full_mid_write_leaves_nothing(make_meta: Factory, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _, _ = make_meta()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "old.gguf").write_bytes(b"keep me")
    _fail_after(monkeypatch, 5, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(ConversionError, match=r"disk filled up.*needs about .* was free"):
        convert_checkpoint(folder, out_dir / "old.gguf")
    assert [p.name for p in out_dir.iterdir()] == ["old.gguf"]
    assert (out_dir / "old.gguf").read_bytes() == b"keep me"


def test_unexpected_failure_mid_write_leaves_nothing(make_meta: Factory, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _, _ = make_meta()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _fail_after(monkeypatch, 3, RuntimeError("boom"))
    with pytest.raises(ConversionError, match="boom"):
        convert_checkpoint(folder, out_dir / "model.gguf")
    assert list(out_dir.iterdir()) == []


def test_not_enough_space_is_refused_up_front(make_meta: Factory, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _, _ = make_meta()

    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(ConversionError, match=r"needs about 3\d\d\.\d kB, only 1.0 kB is free"):
        convert_checkpoint(folder, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("*.gguf*")) and not list(tmp_path.glob(".out.gguf*"))


def test_unrecognised_folder(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="neither an original LLaMA checkpoint"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")


def test_missing_tokenizer(make_meta: Factory, tmp_path: Path) -> None:
    folder, _, _ = make_meta()
    (folder / "tokenizer.model").unlink()
    with pytest.raises(ConversionError, match="no tokenizer.model"):
        convert_checkpoint(folder, tmp_path / "out.gguf")


def test_bad_outtype(make_meta: Factory, tmp_path: Path) -> None:
    folder, _, _ = make_meta()
    with pytest.raises(ConversionError, match="unknown output type 'q4_0'"):
        convert_checkpoint(folder, tmp_path / "out.gguf", outtype="q4_0")


# --- metadata and chat template ---------------------------------------------------------------


def test_metadata(make_meta: Factory, tmp_path: Path, tokenizer: bytes) -> None:
    cfg = TinyConfig(n_kv_heads=2, norm_eps=1e-6, rope_theta=40000.0)
    folder, cfg, _ = make_meta(cfg)
    out = tmp_path / "out.gguf"
    convert_checkpoint(folder, out)
    fields = gguf_fields(out)
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    expected = {
        "llama.context_length": 2048, "llama.embedding_length": 64, "llama.block_count": 2,
        "llama.feed_forward_length": 192, "llama.rope.dimension_count": 16,
        "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
    }
    assert {k: fields[k] for k in expected} == expected
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert fields["llama.rope.freq_base"] == pytest.approx(40000.0)

    vocab = read_sentencepiece(folder / "tokenizer.model")
    assert fields["tokenizer.ggml.tokens"] == vocab.pieces
    np.testing.assert_allclose(fields["tokenizer.ggml.scores"], vocab.scores)
    types = fields["tokenizer.ggml.token_type"]
    pieces = vocab.pieces
    assert types[pieces.index("<unk>")] == gguf.TokenType.UNKNOWN
    assert types[pieces.index("<s>")] == gguf.TokenType.CONTROL
    assert types[pieces.index("<sep>")] == gguf.TokenType.USER_DEFINED
    assert types[pieces.index("<0x0A>")] == gguf.TokenType.BYTE
    assert types[pieces.index("▁the")] == gguf.TokenType.NORMAL


def test_chat_template_choices(make_meta: Factory, tmp_path: Path) -> None:
    folder, _, _ = make_meta()
    convert_checkpoint(folder, tmp_path / "alpaca.gguf")
    assert gguf_fields(tmp_path / "alpaca.gguf")["tokenizer.chat_template"] == ALPACA_CHAT_TEMPLATE

    convert_checkpoint(folder, tmp_path / "none.gguf", chat_template="none")
    assert "tokenizer.chat_template" not in gguf_fields(tmp_path / "none.gguf")

    custom = tmp_path / "chatml.jinja"
    custom.write_text("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% endfor %}")
    convert_checkpoint(folder, tmp_path / "custom.gguf", chat_template=str(custom))
    assert gguf_fields(tmp_path / "custom.gguf")["tokenizer.chat_template"] == custom.read_text()

    with pytest.raises(ConversionError, match="chat template file .*missing.jinja not found"):
        convert_checkpoint(folder, tmp_path / "x.gguf", chat_template=str(tmp_path / "missing.jinja"))


CONVERSATIONS = [
    (None, [("user", "Name three camelids.")]),
    ("You are a helpful llama.", [("user", "Hi"), ("assistant", "Hello! "), ("user", "  Bye\n")]),
    (None, [("user", "1"), ("assistant", "2"), ("user", "3"), ("assistant", "4"), ("user", "5")]),
]


@pytest.mark.parametrize(("system", "turns"), CONVERSATIONS)
def test_alpaca_template_renders_like_the_bot(system: str | None,
                                              turns: list[tuple[str, str]]) -> None:
    conversation = [Turn(role, text) for role, text in turns]  # type: ignore[arg-type]
    expected = prompt_text(AlpacaFormat().render(system, conversation))

    # As the bot renders a GGUF's own template. JinjaFormat puts each message back unstripped
    # after rendering, so only already-stripped texts can match AlpacaFormat there.
    from_gguf = JinjaFormat(ALPACA_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>")
    stripped = [Turn(t.role, t.text.strip()) for t in conversation]
    assert prompt_text(from_gguf.render(system, stripped)) == prompt_text(
        AlpacaFormat().render(system, stripped))
    assert "### Instruction:" in from_gguf.stop

    # As plain Jinja (llama-cpp-python's chat handler, transformers) renders it.
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": role, "content": text} for role, text in turns]
    for env in (jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True),
                jinja2.Environment(undefined=jinja2.StrictUndefined)):
        rendered = env.from_string(ALPACA_CHAT_TEMPLATE).render(
            messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
        assert rendered == expected


def test_alpaca_template_in_llama_cpp_python() -> None:

    formatter = Jinja2ChatFormatter(ALPACA_CHAT_TEMPLATE, eos_token="</s>", bos_token="<s>")
    result = formatter(messages=[{"role": "user", "content": "Hello"}])
    assert result.prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n\nHello\n\n### Response:\n\n"
    )


# --- readers ----------------------------------------------------------------------------------


def test_torch_reader_handles_views_and_offsets(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    blob = encode(base, "F32")
    views = {
        # base.T: a transposed view sharing the storage
        "transposed": (StoredTensor("s", "F32", 24, (6, 4), (1, 6)), blob),
        # base[2:]: a view starting 12 elements in
        "tail": (StoredTensor("s", "F32", 24, (2, 6), (6, 1), offset=12), blob),
    }
    path = tmp_path / "views.pth"
    write_torch_zip(path, {"plain": base}, dtype="F32", views=views)
    tensors = read_torch_checkpoint(path)
    np.testing.assert_array_equal(tensors["plain"].load(), base)
    np.testing.assert_array_equal(tensors["transposed"].load(), base.T)
    np.testing.assert_array_equal(tensors["tail"].load(), base[2:])
    np.testing.assert_array_equal(tensors["transposed"].read_rows(1, 3), base.T[1:3])


def test_torch_reader_rejects_truncated_and_legacy_files(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ConversionError, match="not a zip-format PyTorch checkpoint"):
        read_torch_checkpoint(legacy)


def test_safetensors_reader_matches_the_library(tmp_path: Path) -> None:
    tensors = {"a": np.arange(12, dtype=np.float16).reshape(3, 4),
               "b": np.linspace(-1, 1, 5, dtype=np.float32)}
    path = tmp_path / "x.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    read = read_safetensors(path)
    for name, values in tensors.items():
        assert read[name].dtype == {np.float16: "F16", np.float32: "F32"}[values.dtype.type]
        np.testing.assert_array_equal(read[name].load(), values)


def test_safetensors_reader_rejects_truncated_file(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 10)
    with pytest.raises(ConversionError, match="truncated"):
        read_safetensors(path)


def test_bf16_rows_widen_to_float32(tmp_path: Path) -> None:
    values = round_to(np.linspace(-3, 3, 32, dtype=np.float32), "BF16").reshape(4, 8)
    path = tmp_path / "bf16.bin"
    path.write_bytes(encode(values, "BF16"))
    tensor = LazyTensor("BF16", (4, 8), FileRange(path, 0, 64), 0, (8, 1))
    rows = tensor.read_rows(1, 3)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, values[1:3])


# --- progress ---------------------------------------------------------------------------------


def test_progress_bar_draws_only_when_enabled() -> None:
    quiet = StringIO()  # not a terminal
    with byte_progress(100, label="converting", stream=quiet) as bar:
        bar.update(100)
    assert quiet.getvalue() == ""

    shown = StringIO()
    with byte_progress(2_000_000, label="converting", stream=shown, enabled=True) as bar:
        bar.update(1_000_000)
        bar.update(1_000_000)
    lines = shown.getvalue().split("\r")
    assert lines[-1].startswith("converting: 100%|") and "2.00M/2.00M" in lines[-1]
    assert shown.getvalue().endswith("\n")
    assert math.isclose(bar.n, 2_000_000)


def test_convert_shows_progress_only_when_asked(make_meta: Factory, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder, _, _ = make_meta()
    convert_checkpoint(folder, tmp_path / "quiet.gguf")  # stderr is not a terminal here
    assert capsys.readouterr().err == ""
    convert_checkpoint(folder, tmp_path / "shown.gguf", progress=True)
    err = capsys.readouterr().err
    assert "converting: 100%|" in err and err.endswith("\n")

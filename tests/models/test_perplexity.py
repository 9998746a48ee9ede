"""`compute_perplexity` on the demo model and the shipped sample text."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

from bot.errors import ModelError, UserError
from bot.models.perplexity import (
    PerplexityResult,
    chunk_printer,
    compute_perplexity,
    load_sample_text,
    token_nll,
)
from bot.models.quantize import quantize_model
from tests.cpu import THREADS

pytestmark = pytest.mark.timeout(300)

N_CTX = 128  # small for speed: the sample gives about nine chunks


@pytest.fixture(scope="module")
def sample() -> str:
    return load_sample_text()


@pytest.fixture(scope="module")
def demo_result(demo_model: Path, sample: str) -> tuple[PerplexityResult, list[tuple[int, int,
                                                                                       float]]]:
    chunks: list[tuple[int, int, float]] = []
    result = compute_perplexity(demo_model, sample, n_ctx=N_CTX, threads=THREADS,
                                on_chunk=lambda *args: chunks.append(args))
    return result, chunks


def test_sample_text_ships_with_the_package(sample: str) -> None:
    assert 3_000 <= len(sample.encode("utf-8")) <= 6_000
    assert sample.isascii() and "alpaca" in sample


@pytest.mark.model
def test_demo_model_perplexity(
    demo_result: tuple[PerplexityResult, list[tuple[int, int, float]]],
) -> None:
    result, chunks = demo_result
    assert math.isfinite(result.ppl) and result.ppl > 1
    # A 135M model on plain English prose: far from both 1 and the vocabulary size (49152).
    assert 5 < result.ppl < 200
    assert math.isfinite(result.stderr) and 0 < result.stderr < result.ppl
    assert result.n_chunks >= 4
    # Each chunk scores its second half but the last token: n_ctx - n_ctx/2 - 1 tokens.
    assert result.n_tokens_scored == result.n_chunks * (N_CTX - N_CTX // 2 - 1)
    assert [c[:2] for c in chunks] == [(i, result.n_chunks) for i in range(1, result.n_chunks + 1)]
    assert chunks[-1][2] == pytest.approx(result.ppl)
    assert result.seconds > 0


@pytest.mark.model
def test_output_looks_like_llama_cpp(
    demo_result: tuple[PerplexityResult, list[tuple[int, int, float]]],
) -> None:
    result, chunks = demo_result
    stream = io.StringIO()
    printer = chunk_printer(stream)
    for chunk in chunks:
        printer(*chunk)
    assert re.fullmatch(r"(\[\d+\]\d+\.\d{4},)+\n", stream.getvalue())
    assert stream.getvalue().startswith(f"[1]{chunks[0][2]:.4f},[2]")
    assert re.fullmatch(r"Final estimate: PPL = \d+\.\d{4} \+/- \d+\.\d{5}", result.summary())


# Slow by nature: two requantizations of the demo model and a perplexity pass over each.
@pytest.mark.model
def test_higher_precision_has_lower_perplexity(
    demo_model: Path, sample: str, tmp_path_factory: pytest.TempPathFactory,
    demo_result: tuple[PerplexityResult, list[tuple[int, int, float]]],
) -> None:
    # Both files are requantized from the Q4_1 demo model, the only copy there is. Q8_0 keeps
    # Q4_1's values almost exactly, so its PPL stays at the original's; q2_k throws away much
    # more (its 256-wide blocks fall back to q4_0 on the 576-wide rows, and ffn_down drops to
    # 3-bit q3_K). Measured here: about 28 against 37, a gap far wider than any rounding
    # difference between CPUs; the stderr printed by llama.cpp is the text's sampling error,
    # shared by both runs on the same text, not the error of the difference.
    folder = tmp_path_factory.mktemp("ppl")
    fine = quantize_model(demo_model, folder / "q8_0.gguf", "q8_0", allow_requantize=True)
    coarse = quantize_model(demo_model, folder / "q2_k.gguf", "q2_k", allow_requantize=True)
    ppl_fine = compute_perplexity(fine.output, sample, n_ctx=N_CTX, threads=THREADS).ppl
    ppl_coarse = compute_perplexity(coarse.output, sample, n_ctx=N_CTX, threads=THREADS).ppl
    original = demo_result[0].ppl
    assert ppl_fine == pytest.approx(original, rel=0.03)
    assert ppl_fine < ppl_coarse * 0.95


@pytest.mark.model
def test_text_too_short_says_how_many_tokens(demo_model: Path) -> None:
    with pytest.raises(UserError, match=r"at least 256 tokens .* only \d+") as caught:
        compute_perplexity(demo_model, "Far too short a text.", n_ctx=N_CTX, threads=THREADS)
    assert "context of 128" in str(caught.value)


def test_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_text("text")
    with pytest.raises(ModelError, match="not a GGUF"):
        compute_perplexity(path, "text " * 1000, n_ctx=N_CTX)


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="context"):
        compute_perplexity(tmp_path / "x.gguf", "text", n_ctx=2)
    with pytest.raises(UserError, match="batch"):
        compute_perplexity(tmp_path / "x.gguf", "text", n_batch=0)


def test_token_nll_is_a_stable_log_softmax() -> None:
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 50)).astype(np.float32) * 4
    logits[0] += 5000  # a naive exp would overflow on this row
    targets = rng.integers(0, 50, size=6)
    expected = []
    for row, target in zip(logits.astype(np.float64), targets, strict=True):
        shifted = row - row.max()
        expected.append(math.log(np.exp(shifted).sum()) - shifted[target])
    result = token_nll(logits, targets)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    assert np.all(result >= 0)

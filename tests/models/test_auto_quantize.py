"""`quantize --auto` on an f16 made from the demo model: the table, the budget, the choice rule,
the files kept, the chart, cancel, and the CLI. Few types, one or two chunks of 128 tokens."""

from __future__ import annotations

import json
import math
import sys
import threading
from pathlib import Path

import pytest

from bot.cli import main
from bot.errors import QuantizeCancelled, UserError
from bot.llama.gguf_file import read_gguf_info
from bot.models.auto_plan import AutoQuantizeOptions, plan_auto_quantize
from bot.models.auto_quantize import AutoProgress, run_auto_quantize
from bot.models.auto_report import AutoQuantizeReport, Candidate, choose, mark_choice
from bot.models.auto_timing import RunClock
from bot.models.memory_budget import default_budget, kv_bytes_per_token, kv_cache_size
from bot.models.perplexity import load_sample_text
from bot.models.quant_chart import MISSING_NOTE, draw_chart
from bot.models.quant_types import parse_quant_type
from bot.models.quantize import quantize_model
from tests.cpu import THREADS

pytestmark = pytest.mark.timeout(300)

GiB = 1 << 30


@pytest.fixture(scope="module")
def demo_f16_master(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model's Q4_1 weights written back as F16 by llama.cpp's quantizer."""
    path = tmp_path_factory.mktemp("f16") / "demo-f16.gguf"
    quantize_model(demo_model, path, "f16", allow_requantize=True)
    return path


@pytest.fixture
def demo_f16(demo_f16_master: Path, tmp_path: Path) -> Path:
    """The f16 alone in a directory of the test's own (a hard link: no copy of 270 MB)."""
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / demo_f16_master.name
    path.hardlink_to(demo_f16_master)
    return path


def options(**values: object) -> AutoQuantizeOptions:
    values.setdefault("types", (parse_quant_type("q4_0"), parse_quant_type("q8_0")))
    values.setdefault("budget_bytes", 64 * GiB)
    values.setdefault("text", load_sample_text())
    values.setdefault("n_ctx", 128)
    values.setdefault("chunks", 2)
    values.setdefault("threads", THREADS)
    values.setdefault("slots", 1)
    values.setdefault("max_ctx", 256)
    return AutoQuantizeOptions(**values)  # type: ignore[arg-type]


def by_type(report: AutoQuantizeReport) -> dict[str, Candidate]:
    return {c.qtype: c for c in report.candidates}


# -- the choice rule (pure) -----------------------------------------------------------------------


def candidate(qtype: str, size: int, ppl: float, error: float, speed: float) -> Candidate:
    return Candidate(qtype=qtype, size_bytes=size, ram_bytes=size, ppl=ppl, ppl_error=error,
                     tokens_per_second=speed)


def test_the_lowest_perplexity_wins_when_the_others_are_clearly_worse() -> None:
    rows = [candidate("q4_0", 90, 12.4, 0.1, 80), candidate("q8_0", 145, 10.8, 0.1, 60)]
    assert choose(rows) is rows[1]


def test_a_near_tie_goes_to_the_faster_file() -> None:
    rows = [candidate("q8_0", 145, 10.79, 0.2, 60), candidate("q5_1", 110, 10.90, 0.3, 72),
            candidate("q4_0", 90, 12.4, 0.3, 85)]
    assert choose(rows) is rows[1]  # within q8_0's ± 0.2; q4_0 is faster but clearly worse


def test_speeds_within_five_percent_go_to_the_smaller_file() -> None:
    rows = [candidate("q8_0", 145, 10.79, 0.2, 70.0), candidate("q6_k", 138, 10.80, 0.2, 68.0)]
    assert choose(rows) is rows[1]


def test_no_error_means_no_ties_and_skipped_types_never_win() -> None:
    rows = [candidate("q8_0", 145, 10.79, math.nan, 60), candidate("q5_1", 110, 10.80, 0.1, 90),
            Candidate(qtype="f16", size_bytes=270, ram_bytes=270, skipped="skipped: too big")]
    assert choose(rows) is rows[0]
    assert [c.chosen for c in mark_choice(rows)] == [True, False, False]
    assert choose(rows[2:]) is None


def test_kv_cache_and_budget_from_the_header(demo_f16_master: Path) -> None:
    info = read_gguf_info(demo_f16_master)
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 values, keys and values in f16.
    assert kv_bytes_per_token(info) == 30 * 3 * (64 + 64) * 2
    kv = kv_cache_size(info, slots=4, max_ctx=2048, kv_type="f16")
    assert kv.bytes == 4 * 2048 * 23040
    assert kv_cache_size(info, slots=1, max_ctx=65536, kv_type="f16").n_ctx == 8192  # trained
    assert default_budget(8 * GiB) == 8 * GiB - int(0.8 * GiB)
    assert default_budget(1 * GiB) == 1 * GiB - (256 << 20)


def test_the_clock_scales_the_plan_by_the_steps_done() -> None:
    now = [0.0]
    clock = RunClock([10.0, 10.0, 10.0], now=lambda: now[0])
    assert clock.remaining() == 30.0
    clock.step_started()
    now[0] = 20.0  # the first step took twice its estimate: so will the others
    clock.step_finished()
    clock.step_started()
    assert clock.remaining() == 40.0
    now[0] = 25.0  # halfway through the second step after 5 s: 5 s more, then 20
    assert clock.remaining(0.5) == 25.0
    clock.skip()  # the second step's type did not fit after all
    assert clock.remaining(0.5) == 5.0
    assert clock.elapsed == 25.0


# -- runs on the demo model -----------------------------------------------------------------------


@pytest.mark.model
def test_table_orders_q8_0_below_q4_0_and_keeps_only_the_choice(demo_f16: Path) -> None:
    seen: list[AutoProgress] = []
    estimates: list[float] = []
    plan = plan_auto_quantize(demo_f16, options())
    report = run_auto_quantize(plan, on_progress=seen.append,
                               on_estimate=lambda seconds, speed: estimates.append(seconds))
    rows = by_type(report)
    assert rows["q8_0"].ppl is not None and rows["q4_0"].ppl is not None
    assert rows["q8_0"].ppl < rows["q4_0"].ppl
    assert all(c.measured and c.tokens_per_second and c.tokens_per_second > 0
               for c in report.candidates)
    assert rows["q4_0"].size_bytes < rows["q8_0"].size_bytes
    assert rows["q4_0"].ram_bytes == rows["q4_0"].size_bytes + plan.kv.bytes
    # The choice follows the rule, and only the chosen file is left next to the source.
    chosen = report.chosen
    assert chosen is not None and chosen.qtype == choose(report.candidates).qtype  # type: ignore[union-attr]
    names = sorted(p.name for p in demo_f16.parent.iterdir())
    assert names == sorted(["demo-f16.gguf", f"demo-{chosen.qtype}.gguf", "demo-auto.json",
                            "demo-auto.png"])
    assert read_gguf_info(demo_f16.parent / f"demo-{chosen.qtype}.gguf").file_type_name == \
        chosen.qtype.upper()
    saved = json.loads((demo_f16.parent / "demo-auto.json").read_text())
    assert saved["chosen"] == chosen.qtype
    assert [t["type"] for t in saved["types"]] == ["q4_0", "q8_0"]
    assert saved["types"][1]["ppl"] == pytest.approx(rows["q8_0"].ppl)
    assert (demo_f16.parent / "demo-auto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The table: one row a type, the chosen one marked.
    table = report.table().splitlines()
    assert table[0].split()[:3] == ["type", "file", "size"]
    assert any(line.startswith(chosen.qtype) and line.endswith("✓") for line in table)
    # Progress: every step, in order, with a time left once there is a plan.
    assert len(estimates) == 1 and estimates[0] > 0
    assert [p.step for p in seen if p.stage != "probe"] == sorted(
        p.step for p in seen if p.stage != "probe")
    assert {(p.step, p.stage) for p in seen} >= {(1, "quantize"), (2, "perplexity"),
                                                 (2, "speed"), (3, "quantize"), (4, "perplexity")}
    assert all(p.steps == 4 for p in seen)
    assert any(p.stage == "quantize" and p.detail.startswith("tensor ") for p in seen)
    assert any(p.detail == "chunk 2/2" for p in seen)


@pytest.mark.model
def test_a_tiny_budget_skips_the_large_types(demo_f16: Path) -> None:
    sizes = {t.qtype.label: t.ram_bytes for t in plan_auto_quantize(demo_f16, options()).types}
    budget = (sizes["q4_0"] + sizes["q8_0"]) // 2
    plan = plan_auto_quantize(demo_f16, options(budget_bytes=budget, chunks=1))
    assert [(t.qtype.label, t.fits) for t in plan.types] == [("q4_0", True), ("q8_0", False)]
    report = run_auto_quantize(plan, draw=False)
    rows = by_type(report)
    assert rows["q8_0"].skipped is not None and rows["q8_0"].skipped.startswith("skipped: needs ~")
    assert rows["q8_0"].estimated and rows["q8_0"].ppl is None
    assert report.chosen is rows["q4_0"]
    line = next(line for line in report.table().splitlines() if line.startswith("q8_0"))
    assert "~" in line and "skipped" in line
    assert not (demo_f16.parent / "demo-q8_0.gguf").exists()


@pytest.mark.model
@pytest.mark.parametrize("stage", ["quantize", "perplexity"])
def test_cancel_leaves_no_partial_file(demo_f16: Path, stage: str) -> None:
    cancel = threading.Event()

    def on_progress(p: AutoProgress) -> None:
        if p.stage == stage and p.qtype == "q8_0":
            cancel.set()

    plan = plan_auto_quantize(demo_f16, options(types=(parse_quant_type("q4_0"),
                                                       parse_quant_type("q8_0"))))
    with pytest.raises(QuantizeCancelled):
        run_auto_quantize(plan, on_progress=on_progress, cancel=cancel)
    assert [p.name for p in demo_f16.parent.iterdir()] == ["demo-f16.gguf"]


def test_refusals_before_anything_runs(demo_f16_master: Path, demo_model: Path,
                                       tmp_path: Path) -> None:
    with pytest.raises(Exception, match="already quantized"):
        plan_auto_quantize(demo_model, options())
    folder = tmp_path / "m"
    folder.mkdir()
    source = folder / "demo-f16.gguf"
    source.hardlink_to(demo_f16_master)
    (folder / "demo-q4_0.gguf").write_bytes(b"an older file")
    with pytest.raises(UserError, match="exists; pass --force"):
        plan_auto_quantize(source, options())
    assert plan_auto_quantize(source, options(replace=True)).types[0].fits
    with pytest.raises(UserError, match="already f16"):
        plan_auto_quantize(source, options(types=(parse_quant_type("f16"),), replace=True))


@pytest.mark.model
def test_a_short_text_is_refused_before_quantizing(demo_f16: Path) -> None:
    plan = plan_auto_quantize(demo_f16, options(text="Too short to measure anything."))
    with pytest.raises(UserError, match="too short"):
        run_auto_quantize(plan)
    assert [p.name for p in demo_f16.parent.iterdir()] == ["demo-f16.gguf"]


# -- the chart ------------------------------------------------------------------------------------


def fabricated_report(tmp_path: Path) -> AutoQuantizeReport:
    rows = mark_choice([candidate("q4_0", 91_700_000, 34.9, 4.2, 80.1),
                        candidate("q8_0", 144_800_000, 30.2, 3.8, 70.2),
                        Candidate(qtype="q6_k", size_bytes=138_000_000, ram_bytes=9 * GiB,
                                  estimated=True, skipped="skipped: needs ~9 GB")])
    return AutoQuantizeReport(
        source=tmp_path / "demo-f16.gguf", source_bytes=270_000_000, source_type="F16",
        budget_bytes=GiB, kv_bytes=1, kv_slots=1, kv_ctx=256, text_name="t", n_ctx=128,
        chunks=2, threads=THREADS, candidates=tuple(rows), seconds=1.0, estimated_seconds=1.0,
    )


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    path = draw_chart(fabricated_report(tmp_path), tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]  # no temporary file left


def test_without_matplotlib_the_chart_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.models.quant_chart import ChartUnavailable

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ChartUnavailable, match=r"pip install 'alpaca-bot\[chart\]'"):
        draw_chart(fabricated_report(tmp_path), tmp_path / "chart.png")
    assert not list(tmp_path.iterdir())
    assert "matplotlib is not installed" in MISSING_NOTE


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.model
def test_cli_auto_prints_the_estimate_first_then_the_table(
    demo_f16: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the extra missing: a note, no chart
    code = main(["quantize", str(demo_f16), "--auto", "--types", "q4_0", "q4_1", "-c", "128",
                 "--chunks", "1", "--keep-all", "--threads", str(THREADS)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err.index("estimated total time: ~") < err.index("[1/4] q4_0 quantize")
    assert "[4/4] q4_1 measure" in err
    assert out.splitlines()[0].split()[:2] == ["type", "file"]
    assert "Chosen: q4_" in out and MISSING_NOTE in out
    names = {p.name for p in demo_f16.parent.iterdir()}
    assert names == {"demo-f16.gguf", "demo-q4_0.gguf", "demo-q4_1.gguf", "demo-auto.json"}


def test_cli_auto_usage_errors(demo_f16_master: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(demo_f16_master)]) == 2
    assert "IN.gguf OUT.gguf TYPE (or IN.gguf --auto)" in capsys.readouterr().err
    assert main(["quantize", str(demo_f16_master), "out.gguf", "--auto"]) == 2
    assert "--auto names its outputs itself" in capsys.readouterr().err
    assert main(["quantize", str(demo_f16_master), "--auto", "--types", "q9_9"]) == 1
    assert "unknown quantization type 'q9_9'" in capsys.readouterr().err

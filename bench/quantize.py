"""Time and peak memory of `quantize_model` against a bare `llama_model_quantize` call.

Writes a LLaMA-7B-shaped GGUF of random f16 weights (dim 4096, 32 layers, 32 heads, FFN 11008,
vocabulary 32000: about 13.5 GB) tensor by tensor, then quantizes it to q4_0 in child processes:
once by calling llama.cpp's `llama_model_quantize` directly (the baseline) and once through
`bot.models.quantize.quantize_model` (which itself runs the quantizer in a grandchild). Prints
wall times, their ratio (target <= 1.10) and each run's peak resident memory against the model
size. `--layers N` shrinks the model; without it the layer count is the most (up to 32) that the
free disk allows. Everything generated is deleted at the end.

    python bench/quantize.py --layers 8

Linux keeps a process's peak RSS across fork and exec, so a child's ru_maxrss includes its
parent's size at the time: this driver imports only the standard library, and the figures
are read from os.wait4 for each child.

`--auto` benchmarks `quantize --auto` instead: on an f16 written back from the demo model
(or `--source`), one child runs the same quantize and perplexity steps by hand, type after
type, and another runs the auto mode over the same types; it prints both wall times, their
ratio (target <= 1.10: the auto mode's own work, the machine probe, the speed tests, the
table and the chart, stays within 10%), their CPU seconds, each child's peak RSS, and the auto
run's table. Since other work on a shared machine can change its speed several-fold between two
runs, it also prints the ratio inside the best auto run: its total against the same quantize and
perplexity steps as it timed them.

    python bench/quantize.py --auto [--types q4_0 q8_0] [--chunks 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DIM, LAYERS, HEADS, FFN, VOCAB = 4096, 32, 32, 11008, 32000

_GENERATE = """
import sys
from pathlib import Path
import gguf
import numpy as np

path = Path(sys.argv[1])
n_layers, dim, heads, ffn, vocab = map(int, sys.argv[2:])

writer = gguf.GGUFWriter(str(path), "llama")
writer.add_name("bench-7b-shaped")
writer.add_context_length(4096)
writer.add_embedding_length(dim)
writer.add_block_count(n_layers)
writer.add_feed_forward_length(ffn)
writer.add_head_count(heads)
writer.add_head_count_kv(heads)
writer.add_rope_dimension_count(dim // heads)
writer.add_layer_norm_rms_eps(1e-6)
writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
# A minimal sentencepiece-style vocabulary: unk/bos/eos, the 256 byte tokens, filler pieces.
tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
tokens += [f"\\u2581w{i}" for i in range(vocab - len(tokens))]
types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
writer.add_tokenizer_model("llama")
writer.add_token_list(tokens)
writer.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(vocab - 259)])
writer.add_token_types(types)
writer.add_bos_token_id(1)
writer.add_eos_token_id(2)
writer.add_unk_token_id(0)

shapes = [("token_embd.weight", (vocab, dim), np.float16)]
for i in range(n_layers):
    p = f"blk.{i}."
    shapes += [(p + "attn_norm.weight", (dim,), np.float32)]
    shapes += [(p + n + ".weight", (dim, dim), np.float16)
               for n in ("attn_q", "attn_k", "attn_v", "attn_output")]
    shapes += [(p + "ffn_norm.weight", (dim,), np.float32),
               (p + "ffn_gate.weight", (ffn, dim), np.float16),
               (p + "ffn_up.weight", (ffn, dim), np.float16),
               (p + "ffn_down.weight", (dim, ffn), np.float16)]
shapes += [("output_norm.weight", (dim,), np.float32), ("output.weight", (vocab, dim), np.float16)]
for name, shape, dtype in shapes:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    writer.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_ti_data_to_file()

# One block of random values (a prime count of them, so rows do not repeat in step), tiled
# over each tensor as it is written: one tensor in memory at a time, never the model.
rng = np.random.default_rng(0)
block = rng.standard_normal(4_194_301).astype(np.float32) * 0.02
for name, shape, dtype in shapes:
    if dtype == np.float32:
        data = np.ones(shape, dtype=np.float32)
    else:
        data = np.resize(block.astype(np.float16), shape)
    writer.write_tensor_data(data)
    del data
writer.close()
"""

_BASELINE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
params.nthread = int(sys.argv[3])
code = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(),
                                      ctypes.byref(params))
sys.exit(code)
"""

_OURS = """
import json, resource, sys
from pathlib import Path
from bot.models.quantize import quantize_model
seen = []
result = quantize_model(Path(sys.argv[1]), Path(sys.argv[2]), "q4_0",
                        threads=int(sys.argv[3]) or None, on_progress=seen.append)
print(json.dumps({
    "seconds": result.seconds, "tensors": result.tensor_count, "progress": len(seen),
    "child_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "self_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}))
"""


_BY_HAND = """
import json, resource, sys, time
from pathlib import Path
from bot.models.perplexity import compute_perplexity, load_sample_text
from bot.models.quantize import quantize_model
src, work = Path(sys.argv[1]), Path(sys.argv[2])
types, n_ctx, chunks, threads = sys.argv[3].split(","), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
text = load_sample_text()
steps = {}
started = time.monotonic()
for qtype in types:
    dst = work / f"hand-{qtype}.gguf"
    t0 = time.monotonic()
    quantize_model(src, dst, qtype, threads=threads)
    t1 = time.monotonic()
    result = compute_perplexity(dst, text, n_ctx=n_ctx, max_chunks=chunks, threads=threads)
    steps[qtype] = [t1 - t0, time.monotonic() - t1, result.ppl]
    dst.unlink()
print(json.dumps({
    "seconds": time.monotonic() - started, "steps": steps,
    "child_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "self_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}))
"""

_AUTO = """
import json, resource, sys, time
from pathlib import Path
from bot.models.auto_plan import AutoQuantizeOptions, plan_auto_quantize
from bot.models.auto_quantize import run_auto_quantize
from bot.models.perplexity import load_sample_text
from bot.models.quant_types import parse_quant_type
src = Path(sys.argv[1])
types, n_ctx, chunks, threads = sys.argv[3].split(","), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
started = time.monotonic()
options = AutoQuantizeOptions(
    types=tuple(parse_quant_type(t) for t in types), budget_bytes=1 << 50,
    text=load_sample_text(), n_ctx=n_ctx, chunks=chunks, threads=threads, replace=True,
)
estimate = []
report = run_auto_quantize(plan_auto_quantize(src, options),
                           on_estimate=lambda seconds, speed: estimate.append(seconds))
seconds = time.monotonic() - started
chosen = report.chosen
if chosen is not None and chosen.path is not None:
    chosen.path.unlink()
print(json.dumps({
    "seconds": seconds, "estimate": estimate[0], "table": report.table(),
    "summary": report.summary(), "chart": bool(report.chart_path),
    "probe": report.extra["machine"]["probe_seconds"],
    "steps": {c.qtype: [c.quantize_seconds, c.measure_seconds, c.speed_seconds, c.ppl]
              for c in report.candidates},
    "chart_seconds": report.extra.get("chart_seconds", 0.0),
    "child_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "self_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}))
"""

_DEMO_F16 = """
import sys
from pathlib import Path
from bot.models.demo import find_demo_model
from bot.models.quantize import quantize_model
quantize_model(find_demo_model(), Path(sys.argv[1]), "f16", allow_requantize=True)
"""


@dataclass
class Run:
    seconds: float
    peak: int
    """Peak RSS in bytes of the child and everything it waited for."""
    output_bytes: int
    report: dict[str, int | float] | None = None


def model_bytes(n_layers: int) -> int:
    """f16 bytes of a 7B-shaped model with `n_layers` layers (embeddings, output, norms)."""
    per_layer = 4 * DIM * DIM + 3 * DIM * FFN
    return 2 * 2 * VOCAB * DIM + n_layers * 2 * per_layer + 4 * DIM * (2 * n_layers + 1)


def layers_that_fit(free: int, requested: int | None) -> int:
    """`requested`, or the most layers (up to 32) whose f16 file and q4_0 output fit with room."""
    def needed(n: int) -> float:
        return 1.45 * model_bytes(n) + 2e9  # f16 + q4_0 (~0.3x) + quantize_model's margin

    if requested is not None:
        if needed(requested) > free:
            raise SystemExit(f"{requested} layers need about {needed(requested) / 1e9:.1f} GB "
                             f"of disk, {free / 1e9:.1f} GB free")
        return requested
    fitting = [n for n in range(1, LAYERS + 1) if needed(n) <= free]
    if not fitting:
        raise SystemExit(f"not enough disk space for even one layer ({free / 1e9:.1f} GB free)")
    return fitting[-1]


def run_child(code: str, *args: str, capture: bool = False) -> tuple[float, int, str]:
    """Run `python -c code args` in the repository: (seconds, peak RSS bytes, stdout)."""
    seconds, _, peak, out = run_child_cpu(code, *args, capture=capture)
    return seconds, peak, out


def run_child_cpu(code: str, *args: str, capture: bool = False) -> tuple[float, float, int, str]:
    """`run_child`, also returning the CPU seconds of the child and what it waited for."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO,
                                stdout=out if capture else subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"child {code.strip().splitlines()[0]!r} failed with exit code "
                             f"{proc.returncode}")
        out.seek(0)
        return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, out.read()


def read_through(path: Path) -> None:
    """Read the file once so both runs start with it in the page cache."""
    with path.open("rb", buffering=0) as handle:
        while handle.read(64 << 20):
            pass


def quantize_baseline(src: Path, dst: Path, threads: int) -> Run:
    seconds, peak, _ = run_child(_BASELINE, str(src), str(dst), str(threads))
    run = Run(seconds, peak, dst.stat().st_size)
    dst.unlink()
    return run


def quantize_ours(src: Path, dst: Path, threads: int) -> Run:
    seconds, peak, out = run_child(_OURS, str(src), str(dst), str(threads), capture=True)
    run = Run(seconds, peak, dst.stat().st_size, json.loads(out.strip().splitlines()[-1]))
    dst.unlink()
    return run


def bench_auto(args: argparse.Namespace) -> None:
    """By hand against --auto, in two children each, alternating which goes first."""
    work = Path(tempfile.mkdtemp(prefix="quantize-auto-bench-", dir=args.dir))
    try:
        if args.source is None:
            src = work / "demo-f16.gguf"
            run_child(_DEMO_F16, str(src))
        else:
            src = work / args.source.name
            if args.source.stat().st_dev == work.stat().st_dev:
                os.link(args.source, src)
            else:
                shutil.copyfile(args.source, src)
        read_through(src)
        threads = args.threads or 2
        common = [str(src), str(work), ",".join(args.types), str(args.ctx), str(args.chunks),
                  str(threads)]
        print(f"source {src.name} ({src.stat().st_size / 1e6:.0f} MB), types "
              f"{' '.join(args.types)}, -c {args.ctx}, {args.chunks} chunks, {threads} threads",
              flush=True)
        hand: list[tuple[float, int, dict]] = []
        auto: list[tuple[float, int, dict]] = []
        cpu: dict[str, list[float]] = {"hand": [], "auto": []}
        for i in range(args.rounds):
            order = ("hand", "auto") if i % 2 == 0 else ("auto", "hand")
            for which in order:
                code = _BY_HAND if which == "hand" else _AUTO
                seconds, used, peak, out = run_child_cpu(code, *common, capture=True)
                report = json.loads(out.strip().splitlines()[-1])
                (hand if which == "hand" else auto).append((seconds, peak, report))
                cpu[which].append(used)
                print(f"  round {i + 1} {which}: {seconds:6.1f} s ({used:6.1f} s of CPU), peak "
                      f"RSS {peak / 1e6:5.0f} MB", flush=True)
        best_hand = min(hand, key=lambda r: r[0])
        best_auto = min(auto, key=lambda r: r[0])
        ah = best_auto[2]
        # Inside one auto run, whatever the machine's load did meanwhile: the same quantize and
        # perplexity steps (each type's measure step less its speed test) against the total.
        steps = sum(q + m - sp for q, m, sp, _ in ah["steps"].values() if q and m)
        own_speed = sum(sp for _, _, sp, _ in ah["steps"].values() if sp)
        print()
        print(ah["table"])
        print(ah["summary"])
        print()
        print(f"by hand (quantize + perplexity per type): {best_hand[0]:.1f} s (best of "
              f"{len(hand)}), peak RSS {max(r[1] for r in hand) / 1e6:.0f} MB "
              f"(quantizer child {best_hand[2]['child_peak'] / 1e6:.0f} MB, process "
              f"{best_hand[2]['self_peak'] / 1e6:.0f} MB)")
        print(f"--auto:                                   {best_auto[0]:.1f} s (best of "
              f"{len(auto)}; estimated {ah['estimate']:.0f} s before it started, probe "
              f"{ah['probe']:.1f} s, chart {'drawn' if ah['chart'] else 'skipped'}), peak RSS "
              f"{max(r[1] for r in auto) / 1e6:.0f} MB (quantizer child "
              f"{ah['child_peak'] / 1e6:.0f} MB, process {ah['self_peak'] / 1e6:.0f} MB)")
        ratio = best_auto[0] / best_hand[0]
        print(f"time ratio auto/by hand: {ratio:.3f} (target <= 1.10: "
              f"{'met' if ratio <= 1.10 else 'NOT met'}); CPU seconds "
              f"{min(cpu['auto']):.1f} / {min(cpu['hand']):.1f} = "
              f"{min(cpu['auto']) / min(cpu['hand']):.3f}")
        inside = ah["seconds"] / steps if steps else float("nan")
        print(f"inside the best auto run: {steps:.1f} s of quantize and perplexity steps, "
              f"{ah['seconds'] - steps:.1f} s of its own (probe {ah['probe']:.1f} s, speed tests "
              f"{own_speed:.1f} s, chart {ah['chart_seconds']:.1f} s): {inside:.3f}x the steps")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--auto", action="store_true",
                        help="benchmark quantize --auto against the same steps by hand")
    parser.add_argument("--source", type=Path,
                        help="--auto: an f16 GGUF (default: one written from the demo model)")
    parser.add_argument("--types", nargs="+",
                        default=["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k_m", "q5_k_m",
                                 "q6_k"], help="--auto: the types (default: the auto mode's)")
    parser.add_argument("--chunks", type=int, default=2, help="--auto: perplexity chunks (2)")
    parser.add_argument("--ctx", type=int, default=512, help="--auto: perplexity chunk size")
    parser.add_argument("--layers", type=int, help="layer count (default: 32 if the disk allows)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="baseline/ours pairs, alternating the order (default 2)")
    parser.add_argument("--threads", type=int, default=0,
                        help="quantizer threads for both (default 0: all hardware threads)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where to write the model and its quantized copies")
    args = parser.parse_args()
    if args.auto:
        bench_auto(args)
        return

    n_layers = layers_that_fit(shutil.disk_usage(args.dir).free, args.layers)
    size = model_bytes(n_layers)
    work = Path(tempfile.mkdtemp(prefix="quantize-bench-", dir=args.dir))
    try:
        src = work / "model-f16.gguf"
        print(f"writing a {n_layers}-layer 7B-shaped f16 GGUF ({size / 1e9:.2f} GB) "
              f"to {work} ...", flush=True)
        seconds, peak, _ = run_child(_GENERATE, str(src), *map(str, (n_layers, DIM, HEADS, FFN,
                                                                     VOCAB)))
        actual = src.stat().st_size
        print(f"  {actual / 1e9:.2f} GB written in {seconds:.0f} s (writer peak RSS "
              f"{peak / 1e6:.0f} MB)", flush=True)
        os.sync()
        read_through(src)

        baselines: list[Run] = []
        ours: list[Run] = []
        for i in range(args.rounds):
            order = ("baseline", "ours") if i % 2 == 0 else ("ours", "baseline")
            for which in order:
                dst = work / f"model-q4_0-{which}.gguf"
                if which == "baseline":
                    run = quantize_baseline(src, dst, args.threads)
                    baselines.append(run)
                else:
                    run = quantize_ours(src, dst, args.threads)
                    ours.append(run)
                print(f"  round {i + 1} {which:8}: {run.seconds:6.1f} s, peak RSS "
                      f"{run.peak / 1e6:6.0f} MB, output {run.output_bytes / 1e9:.2f} GB",
                      flush=True)

        best_base = min(baselines, key=lambda r: r.seconds)
        best_ours = min(ours, key=lambda r: r.seconds)
        report = best_ours.report or {}
        same_size = {r.output_bytes for r in baselines + ours}
        print()
        print(f"model: {n_layers} layers, {actual / 1e9:.2f} GB f16 -> "
              f"{best_base.output_bytes / 1e9:.2f} GB q4_0"
              f"{'' if len(same_size) == 1 else ' (output sizes differ!)'}")
        print(f"baseline llama_model_quantize: {best_base.seconds:.1f} s (best of "
              f"{len(baselines)}), peak RSS {max(r.peak for r in baselines) / 1e6:.0f} MB")
        print(f"quantize_model:                {best_ours.seconds:.1f} s (best of {len(ours)}; "
              f"{report.get('seconds', 0):.1f} s inside), peak RSS "
              f"{max(r.peak for r in ours) / 1e6:.0f} MB (quantizer child "
              f"{int(report.get('child_peak', 0)) / 1e6:.0f} MB, parent "
              f"{int(report.get('self_peak', 0)) / 1e6:.0f} MB), "
              f"{report.get('progress', 0)} progress reports for {report.get('tensors', 0)} "
              "tensors")
        ratio = best_ours.seconds / best_base.seconds
        print(f"time ratio ours/baseline: {ratio:.3f} (target <= 1.10: "
              f"{'met' if ratio <= 1.10 else 'NOT met'})")
        worst_peak = max(r.peak for r in ours)
        print(f"peak RSS / model size: ours {worst_peak / actual:.3f}, baseline "
              f"{max(r.peak for r in baselines) / actual:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

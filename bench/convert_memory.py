"""Peak memory of `alpaca-bot convert` on a 7B-shaped checkpoint.

Writes an original-layout (Meta) LLaMA-7B-shaped checkpoint of random f16 weights to disk (dim
4096, 32 layers, 32 heads, FFN 11008, vocabulary 32000: about 13.5 GB), converts it to GGUF in a
child process and prints the child's peak resident memory next to the model size. `--layers N`
shrinks the model; without it the layer count is lowered to what the free disk space allows
(the checkpoint and the GGUF must both fit). Everything generated is deleted at the end.

    python bench/convert_memory.py --layers 8

Linux keeps a process's peak RSS across fork and exec, so a child's ru_maxrss includes its
parent's size at fork time: this script therefore imports only the standard library and
generates the checkpoint in a separate child, so the figure is the converter's own.
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
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]

DIM, LAYERS, HEADS, FFN, VOCAB = 4096, 32, 32, 11008, 32000

_GENERATE = """
import json, sys
from pathlib import Path
import numpy as np
from tests.models.checkpoints import (TinyConfig, meta_shapes, split_meta_shapes,
    state_dict_pickle, stored_tensor, train_tokenizer, write_torch_zip_stream)

folder = Path(sys.argv[1])
n_layers, n_shards, dim, heads, ffn, vocab = map(int, sys.argv[2:])
cfg = TinyConfig(dim=dim, n_layers=n_layers, n_heads=heads, n_kv_heads=heads, n_ff=ffn,
                 n_vocab=vocab, norm_eps=1e-6)
(folder / "params.json").write_text(json.dumps({
    "dim": cfg.dim, "multiple_of": 256, "n_heads": cfg.n_heads, "n_layers": cfg.n_layers,
    "norm_eps": cfg.norm_eps, "vocab_size": -1}))
# A small trained tokenizer padded to 32000 entries with added tokens keeps the vocabulary (and
# so the metadata the converter writes) at 7B size.
(folder / "tokenizer.model").write_bytes(train_tokenizer(vocab_size=360))
(folder / "added_tokens.json").write_text(
    json.dumps({f"<extra_{i}>": i for i in range(360, cfg.n_vocab)}))

# One 8 MB block of random f16 values, written over and over: the bytes are real, their
# variety does not matter to memory use.
block = (np.random.default_rng(0).standard_normal(4 << 20) * 0.02).astype("<f2").tobytes()

def fill(size):
    def write(member):
        left = size
        while left:
            n = min(left, len(block))
            member.write(block[:n])
            left -= n
    return write

for shard, shapes in enumerate(split_meta_shapes(meta_shapes(cfg), n_shards)):
    tensors = {name: stored_tensor(str(i), "F16", shape)
               for i, (name, shape) in enumerate(shapes.items())}
    storages = [(t.key, t.numel * 2, fill(t.numel * 2)) for t in tensors.values()]
    write_torch_zip_stream(folder / f"consolidated.{shard:02d}.pth", state_dict_pickle(tensors),
                           storages, archive=f"consolidated.{shard:02d}")
"""

_CONVERT = """
import json, sys
from pathlib import Path
from bot.models.convert import convert_checkpoint
report = convert_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]), outtype=sys.argv[3],
                            progress=False)
print(json.dumps({"bytes": report.bytes_written, "tensors": report.n_tensors,
                  "seconds": report.seconds}))
"""


def model_bytes(n_layers: int) -> int:
    """f16 bytes of a 7B-shaped model with `n_layers` layers (embeddings, output, norms)."""
    per_layer = 4 * DIM * DIM + 3 * DIM * FFN + 2 * DIM
    return 2 * (2 * VOCAB * DIM + n_layers * per_layer + DIM)


def layers_that_fit(free: int, requested: int | None) -> int:
    """`requested`, or the most layers (up to 32) whose checkpoint and GGUF fit with 10% spare."""
    def fits(n: int) -> bool:
        return 2.2 * model_bytes(n) < free

    if requested is not None:
        if not fits(requested):
            raise SystemExit(f"{requested} layers need about {2.2 * model_bytes(requested) / 1e9:.1f}"
                             f" GB of disk, {free / 1e9:.1f} GB free")
        return requested
    fitting = [n for n in range(1, LAYERS + 1) if fits(n)]
    if not fitting:
        raise SystemExit(f"not enough disk space for even one layer ({free / 1e9:.1f} GB free)")
    return fitting[-1]


def run_child(args: list[str], stdout: IO[str] | None = None) -> int:
    """Run a Python child in the repository; return its peak resident memory in bytes."""
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=stdout)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed with exit code {proc.returncode}")
    return usage.ru_maxrss * 1024  # Linux reports kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--layers", type=int, help="layer count (default: 32 if the disk allows)")
    parser.add_argument("--shards", type=int, default=1, help="consolidated.NN.pth shards")
    parser.add_argument("--outtype", default="f16", choices=("f16", "f32", "q8_0"))
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where to write the checkpoint and the GGUF")
    args = parser.parse_args()

    n_layers = layers_that_fit(shutil.disk_usage(args.dir).free, args.layers)
    size = model_bytes(n_layers)
    work = Path(tempfile.mkdtemp(prefix="convert-bench-", dir=args.dir))
    try:
        src, out = work / "checkpoint", work / "model.gguf"
        src.mkdir()
        print(f"writing a {n_layers}-layer 7B-shaped checkpoint ({size / 1e9:.2f} GB, "
              f"{args.shards} shard(s)) to {work} ...", flush=True)
        started = time.monotonic()
        shape = (n_layers, args.shards, DIM, HEADS, FFN, VOCAB)
        run_child(["-c", _GENERATE, str(src), *map(str, shape)])
        print(f"  written in {time.monotonic() - started:.0f} s", flush=True)

        baseline = run_child(["-c", "import bot.models.convert"])
        print(f"converting to {args.outtype} in a child process ...", flush=True)
        with tempfile.TemporaryFile("w+") as log:
            peak = run_child(["-c", _CONVERT, str(src), str(out), args.outtype], log)
            log.seek(0)
            report = json.loads(log.read().strip().splitlines()[-1])
        print(f"  {report['tensors']} tensors, {report['bytes'] / 1e9:.2f} GB written in "
              f"{report['seconds']:.0f} s ({report['bytes'] / 1e6 / report['seconds']:.0f} MB/s)")
        print(f"peak RSS {peak / 1e6:.0f} MB for a {size / 1e9:.1f} GB model "
              f"({100 * peak / size:.2f}%); importing the converter alone peaks at "
              f"{baseline / 1e6:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

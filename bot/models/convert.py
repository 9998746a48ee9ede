"""Convert original (Meta) and Hugging Face LLaMA checkpoints to a GGUF file for llama.cpp.

Tensors stream from memory-mapped source files to the output a few megabytes of rows at a time:
shards are merged, Hugging Face q/k rows un-permuted and values converted chunk by chunk, so
peak memory stays far below one tensor whatever the model size. The output is written to a
temporary file next to the target and renamed into place only when complete. This module is
the driver and the GGUF writing; meta_layout and hf_layout read the folders, rows the tensors.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from numpy.typing import NDArray

from bot.core.templates import ALPACA_INSTRUCTION, ALPACA_PREAMBLE, ALPACA_RESPONSE
from bot.errors import ConversionError
from bot.models.hf_layout import is_hf_checkpoint, open_hf
from bot.models.layout import Checkpoint, ModelParams, Vocab
from bot.models.meta_layout import is_meta_checkpoint, open_meta
from bot.models.progress import byte_progress, format_bytes
from bot.models.rows import RowSource

OUTTYPES = ("f16", "f32", "q8_0")

# Renders exactly what bot.core.templates.AlpacaFormat renders: the preamble (or the system
# message), then "### Instruction:\n\n{user}\n\n" and "### Response:\n\n{assistant}\n\n" per turn,
# and "### Response:\n\n" as the generation prompt. Whitespace control keeps the layout below
# out of the output under any trim_blocks/lstrip_blocks setting. (The constants hold no quotes
# or backslashes, so they can sit inside Jinja string literals as they are.)
ALPACA_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}\n"
    "    {%- set preamble = messages[0]['content'] -%}\n"
    "    {%- set conversation = messages[1:] -%}\n"
    "{%- else -%}\n"
    f"    {{%- set preamble = '{ALPACA_PREAMBLE}' -%}}\n"
    "    {%- set conversation = messages -%}\n"
    "{%- endif -%}\n"
    "{%- if preamble -%}\n"
    "    {{- (preamble | trim) + '\\n\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- for message in conversation -%}\n"
    "    {%- if message['role'] == 'user' -%}\n"
    f"        {{{{- '{ALPACA_INSTRUCTION}\\n\\n' + (message['content'] | trim) + '\\n\\n' -}}}}\n"
    "    {%- elif message['role'] == 'assistant' -%}\n"
    f"        {{{{- '{ALPACA_RESPONSE}\\n\\n' + (message['content'] | trim) + '\\n\\n' -}}}}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    f"    {{{{- '{ALPACA_RESPONSE}\\n\\n' -}}}}\n"
    "{%- endif -%}\n"
)

# Rows are converted in pieces of about this many float32 bytes.
_CHUNK_BYTES = 16 * 1024 * 1024
_FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


@dataclass(frozen=True)
class ConversionReport:
    """What `convert_checkpoint` wrote."""

    outfile: Path
    layout: str  # "meta" or "hf"
    params: ModelParams
    outtype: str
    n_tensors: int
    bytes_written: int
    seconds: float



def convert_checkpoint(
    src_dir: Path,
    outfile: Path,
    *,
    outtype: str = "f16",
    chat_template: str = "alpaca",
    progress: bool | None = None,
) -> ConversionReport:
    """Convert the checkpoint folder `src_dir` (Meta or Hugging Face layout) to `outfile`.

    `outtype` is f16, f32 or q8_0 (1-D tensors always stay f32). `chat_template` is "alpaca",
    "none" or the path of a Jinja file. `progress=None` draws a bar only when stderr is a TTY.
    Raises ConversionError for anything that prevents a correct file; no partial file remains.
    """
    started = time.monotonic()
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown output type {outtype!r}; choose one of {', '.join(OUTTYPES)}")
    template = _resolve_chat_template(chat_template)
    src_dir = Path(src_dir)
    outfile = Path(outfile)
    if not src_dir.is_dir():
        raise ConversionError(f"{src_dir} is not a directory")
    checkpoint = _open_checkpoint(src_dir)
    plans = [_TensorPlan(name, source, _output_type(source.shape, outtype))
             for name, source in checkpoint.tensors.items()]

    needed = _estimate_size(plans, checkpoint.vocab, template)
    free = _check_room(outfile.parent, needed)
    tmp = _create_temp_file(outfile)
    writer: gguf.GGUFWriter | None = None
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        _add_metadata(writer, checkpoint, src_dir.name, outtype, template)
        written = _write_tensors(writer, plans, progress)
        writer.close()
        os.replace(tmp, outfile)
    except OSError as exc:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise _write_error(exc, outfile, needed, free) from exc
    except BaseException as exc:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, ConversionError):
            raise ConversionError(f"conversion to {outfile} failed: {exc!r}") from exc
        raise
    return ConversionReport(
        outfile=outfile,
        layout=checkpoint.layout,
        params=checkpoint.params,
        outtype=outtype,
        n_tensors=len(plans),
        bytes_written=written,
        seconds=time.monotonic() - started,
    )


def _write_error(exc: OSError, outfile: Path, needed: int, free: int) -> ConversionError:
    """What went wrong writing `outfile`, for the user: a full disk says how much is needed."""
    if exc.errno == errno.ENOSPC:
        return ConversionError(
            f"the disk filled up while writing {outfile}: the output needs about "
            f"{format_bytes(needed)} and {format_bytes(free)} was free when conversion "
            "started; free some space and try again"
        )
    return ConversionError(f"cannot write {outfile}: {exc.strerror or exc}")


def _check_room(outdir: Path, needed: int) -> int:
    """The free bytes in `outdir`; ConversionError if it is missing or too full for `needed`."""
    if not outdir.is_dir():
        raise ConversionError(f"the output directory {outdir} does not exist")
    free = shutil.disk_usage(outdir).free
    if free < needed:
        raise ConversionError(
            f"not enough disk space in {outdir}: the output needs about {format_bytes(needed)}, "
            f"only {format_bytes(free)} is free"
        )
    return free


def _create_temp_file(outfile: Path) -> Path:
    """An empty, new file next to `outfile`, with the permissions a plain open() would give."""
    for _ in range(100):
        tmp = outfile.with_name(f".{outfile.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConversionError(
                f"cannot create a file in {outfile.parent}: {exc.strerror or exc}"
            ) from exc
    raise ConversionError(f"cannot create a temporary file in {outfile.parent}")


def _resolve_chat_template(choice: str) -> str | None:
    if choice == "alpaca":
        return ALPACA_CHAT_TEMPLATE
    if choice == "none":
        return None
    path = Path(choice)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConversionError(
            f"chat template file {path} not found (use alpaca, none or the path of a Jinja file)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read the chat template file {path}: {exc}") from exc
    if not text.strip():
        raise ConversionError(f"the chat template file {path} is empty")
    return text


def _open_checkpoint(src_dir: Path) -> Checkpoint:
    if is_meta_checkpoint(src_dir):
        return open_meta(src_dir)
    if is_hf_checkpoint(src_dir):
        return open_hf(src_dir)
    raise ConversionError(
        f"{src_dir} is neither an original LLaMA checkpoint (params.json with "
        "consolidated.NN.pth) nor a Hugging Face one (config.json with *.safetensors or "
        "pytorch_model*.bin)"
    )


# --- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorPlan:
    name: str
    source: RowSource
    qtype: gguf.GGMLQuantizationType

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape)

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape[:-1]) * (self.shape[-1] // block) * size


def _output_type(shape: tuple[int, ...], outtype: str) -> gguf.GGMLQuantizationType:
    # Norms and other vectors stay f32, as llama.cpp's own converter keeps them.
    if len(shape) < 2 or outtype == "f32":
        return gguf.GGMLQuantizationType.F32
    if outtype == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16  # f16, and q8_0 rows that do not fill whole blocks


def _encode(rows: NDArray[Any], qtype: gguf.GGMLQuantizationType) -> NDArray[Any]:
    if qtype == gguf.GGMLQuantizationType.F32:
        return rows.astype(np.float32, copy=False)
    if qtype == gguf.GGMLQuantizationType.F16:
        return rows.astype(np.float16, copy=False)
    return gguf.quants.quantize(rows.astype(np.float32, copy=False), qtype)


def _estimate_size(plans: Sequence[_TensorPlan], vocab: Vocab, template: str | None) -> int:
    align = gguf.GGUF_DEFAULT_ALIGNMENT
    data = sum(gguf.GGUFWriter.ggml_pad(p.nbytes, align) for p in plans)
    infos = sum(len(p.name) + 64 for p in plans)
    tokens = sum(len(t.encode("utf-8")) + 8 + 4 + 4 for t in vocab.pieces)
    return data + infos + tokens + len(template or "") + 64 * 1024


def _add_metadata(writer: gguf.GGUFWriter, checkpoint: Checkpoint, name: str, outtype: str,
                  template: str | None) -> None:
    p = checkpoint.params
    writer.add_name(name)
    writer.add_file_type(_FILE_TYPES[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(p.n_vocab)
    writer.add_context_length(p.n_ctx)
    writer.add_embedding_length(p.n_embd)
    writer.add_block_count(p.n_layer)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_rope_dimension_count(p.head_dim)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head_kv)
    writer.add_layer_norm_rms_eps(p.norm_eps)
    writer.add_rope_freq_base(p.rope_theta)

    vocab = checkpoint.vocab
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.pieces)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    for token_id, add in ((vocab.bos_id, writer.add_bos_token_id),
                          (vocab.eos_id, writer.add_eos_token_id),
                          (vocab.unk_id, writer.add_unk_token_id),
                          (vocab.pad_id, writer.add_pad_token_id)):
        if token_id >= 0:
            add(token_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if template is not None:
        writer.add_chat_template(template)


def _write_tensors(writer: gguf.GGUFWriter, plans: Sequence[_TensorPlan],
                   progress: bool | None) -> int:
    """Write header, metadata and tensor infos with GGUFWriter, then stream the tensor data.

    GGUFWriter's own data writers take whole arrays; the data section is written here chunk by
    chunk in the same layout (each tensor aligned to the file's alignment).
    """
    for plan in plans:
        writer.add_tensor_info(plan.name, plan.shape, np.dtype(np.float32), plan.nbytes,
                               raw_dtype=plan.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None and len(writer.fout) == 1
    out = writer.fout[0]
    writer.write_padding(out, out.tell())

    total = sum(plan.nbytes for plan in plans)
    with byte_progress(total, label="converting", enabled=progress) as bar:
        for plan in plans:
            written = 0
            for chunk in _encoded_chunks(plan):
                out.write(np.ascontiguousarray(chunk).data)
                written += chunk.nbytes
                bar.update(chunk.nbytes)
            if written != plan.nbytes:
                raise ConversionError(f"internal error: {plan.name} produced {written} bytes, "
                                      f"expected {plan.nbytes}")
            writer.write_padding(out, written)
    out.flush()
    os.fsync(out.fileno())
    return out.tell()


def _encoded_chunks(plan: _TensorPlan) -> Iterator[NDArray[Any]]:
    source = plan.source
    n_rows = source.shape[0] if source.shape else 1
    row_elems = math.prod(source.shape[1:])
    align = source.row_align
    step = max(align, _CHUNK_BYTES // max(1, row_elems * 4) // align * align)
    for start in range(0, n_rows, step):
        yield _encode(source.read_rows(start, min(start + step, n_rows)), plan.qtype)

"""What a GGUF model file is, read from its header alone: architecture, file type, tensors.

Only the header is parsed (the vocabulary arrays are skipped, not decoded) and no tensor data is
touched, so this costs milliseconds even for a 13 GB file and needs neither numpy nor llama.cpp.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bot.errors import ModelError
from bot.i18n import _

GGUF_MAGIC = b"GGUF"
# The magics of the pre-GGUF formats (ggml, ggmf, ggjt) as they appear on disk.
_OLD_GGML_MAGICS = (b"lmgg", b"fmgg", b"tjgg")
_DEFAULT_ALIGNMENT = 32

# llama.cpp's `enum llama_ftype` (include/llama.h): what `general.file_type` holds.
FILE_TYPE_NAMES: Mapping[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 7: "Q8_0", 8: "Q5_0",
    9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS",
    21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S",
    27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
_FTYPE_GUESSED = 1024  # a flag llama.cpp ORs in when it had to guess; never meant for files


@dataclass(frozen=True)
class TensorType:
    """One `enum ggml_type`: its name and storage (elements per block, bytes per block)."""

    id: int
    name: str
    block_size: int
    block_bytes: int

    @property
    def is_float(self) -> bool:
        return self.id in (0, 1, 30, 28)  # f32, f16, bf16, f64

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.block_bytes / self.block_size


# ggml's type table (ggml.h; sizes as ggml_blck_size/ggml_type_size report them).
TENSOR_TYPES: Mapping[int, TensorType] = {t.id: t for t in (
    TensorType(0, "F32", 1, 4), TensorType(1, "F16", 1, 2), TensorType(2, "Q4_0", 32, 18),
    TensorType(3, "Q4_1", 32, 20), TensorType(6, "Q5_0", 32, 22), TensorType(7, "Q5_1", 32, 24),
    TensorType(8, "Q8_0", 32, 34), TensorType(9, "Q8_1", 32, 36), TensorType(10, "Q2_K", 256, 84),
    TensorType(11, "Q3_K", 256, 110), TensorType(12, "Q4_K", 256, 144),
    TensorType(13, "Q5_K", 256, 176), TensorType(14, "Q6_K", 256, 210),
    TensorType(15, "Q8_K", 256, 292), TensorType(16, "IQ2_XXS", 256, 66),
    TensorType(17, "IQ2_XS", 256, 74), TensorType(18, "IQ3_XXS", 256, 98),
    TensorType(19, "IQ1_S", 256, 50), TensorType(20, "IQ4_NL", 32, 18),
    TensorType(21, "IQ3_S", 256, 110), TensorType(22, "IQ2_S", 256, 82),
    TensorType(23, "IQ4_XS", 256, 136), TensorType(24, "I8", 1, 1), TensorType(25, "I16", 1, 2),
    TensorType(26, "I32", 1, 4), TensorType(27, "I64", 1, 8), TensorType(28, "F64", 1, 8),
    TensorType(29, "IQ1_M", 256, 56), TensorType(30, "BF16", 1, 2),
    TensorType(34, "TQ1_0", 256, 54), TensorType(35, "TQ2_0", 256, 66),
    TensorType(39, "MXFP4", 32, 17), TensorType(40, "NVFP4", 64, 36),
    TensorType(41, "Q1_0", 128, 18), TensorType(42, "Q2_0", 64, 18),
)}

# The file type a tensor type stands for, when a file has no `general.file_type`.
_FTYPE_OF_TENSOR_TYPE = {
    0: 0, 1: 1, 2: 2, 3: 3, 8: 7, 6: 8, 7: 9, 10: 10, 11: 12, 12: 15, 13: 17, 14: 18, 16: 19,
    17: 20, 18: 23, 19: 24, 20: 25, 21: 26, 22: 28, 23: 30, 29: 31, 30: 32, 34: 36, 35: 37,
    39: 38, 40: 39, 41: 40, 42: 41,
}

Scalar = str | int | float | bool


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the header describes it; `shape` is in ggml order (row length first)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def type(self) -> TensorType | None:
        return TENSOR_TYPES.get(self.type_id)

    @property
    def type_name(self) -> str:
        known = self.type
        return known.name if known else f"type {self.type_id}"

    @property
    def n_bytes(self) -> int:
        known = self.type
        if known is None or known.block_size == 0:
            raise ModelError(f"tensor {self.name} has an unknown type {self.type_id}")
        return self.n_elements // known.block_size * known.block_bytes


@dataclass(frozen=True)
class GGUFInfo:
    """What the header of one GGUF file says, plus its size on disk."""

    path: Path
    version: int
    size_bytes: int
    data_offset: int
    """Where tensor data starts: the size of the header (metadata and tensor table)."""
    metadata: Mapping[str, Scalar] = field(repr=False)
    """Every scalar key/value of the header (arrays such as the vocabulary are skipped)."""
    tensors: tuple[TensorInfo, ...] = field(repr=False)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    @property
    def file_type(self) -> int | None:
        """`general.file_type` (a llama_ftype), or None when the file does not say."""
        value = self.metadata.get("general.file_type")
        if isinstance(value, int) and not isinstance(value, bool):
            return value & ~_FTYPE_GUESSED
        return None

    @property
    def file_type_name(self) -> str:
        """F16, Q4_0, Q4_K_M, ...: from `general.file_type`, else guessed from the tensors."""
        ftype = self.file_type
        if ftype is not None:
            return FILE_TYPE_NAMES.get(ftype, f"type {ftype}")
        counts = Counter(t.type_id for t in self.tensors if len(t.shape) >= 2)
        if not counts:
            return "unknown"
        most_common = counts.most_common(1)[0][0]
        guessed = _FTYPE_OF_TENSOR_TYPE.get(most_common)
        name = FILE_TYPE_NAMES[guessed] if guessed is not None else f"type {most_common}"
        return f"{name} (guessed)"

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def context_length(self) -> int | None:
        """The trained context (`<arch>.context_length`)."""
        value = self.metadata.get(f"{self.architecture}.context_length")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def quantized_types(self) -> frozenset[str]:
        """Names of the quantized types among the matrices (empty for an F32/F16/BF16 file)."""
        return frozenset(
            t.type_name for t in self.tensors
            if len(t.shape) >= 2 and not (t.type is not None and t.type.is_float)
        )


def check_gguf_magic(path: Path) -> None:
    """Fail with one clear line unless `path` is a readable file starting with `GGUF`."""
    if not path.exists():
        raise ModelError(_("model file not found: {path}", path=path))
    if path.is_dir():
        raise ModelError(_("{path} is a directory, not a GGUF file", path=path))
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelError(_("cannot read {path}: {error}", path=path,
                           error=exc.strerror or exc)) from exc
    if magic != GGUF_MAGIC:
        if magic in _OLD_GGML_MAGICS:
            raise ModelError(_("not a GGUF file (no GGUF magic): {path} (an old GGML .bin file: "
                               "convert the original checkpoint to GGUF again)", path=path))
        raise ModelError(_("not a GGUF file (no GGUF magic): {path}", path=path))


def read_gguf_info(path: Path) -> GGUFInfo:
    """Parse the header of the GGUF file at `path`; ModelError if it is not a sound GGUF."""
    check_gguf_magic(path)
    try:
        size = path.stat().st_size
        with path.open("rb", buffering=1 << 20) as handle:
            return _HeaderParser(handle, path, size).parse()
    except OSError as exc:
        raise ModelError(_("cannot read {path}: {error}", path=path,
                           error=exc.strerror or exc)) from exc
    except (struct.error, EOFError) as exc:
        raise ModelError(_("{path} is truncated or corrupt: its GGUF header ends early",
                           path=path)) from exc


class _HeaderParser:
    """Reads GGUF v2/v3 headers (64-bit counts), in either byte order."""

    _SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                11: "q", 12: "d"}
    _STRING, _ARRAY = 8, 9

    def __init__(self, handle: BinaryIO, path: Path, size: int) -> None:
        self._handle = handle
        self._path = path
        self._size = size
        self._order = "<"

    def parse(self) -> GGUFInfo:
        self._handle.seek(4)
        raw_version = self._handle.read(4)
        version = struct.unpack("<I", raw_version)[0]
        if version & 0xFFFF == 0 and version != 0:  # a big-endian file read little-endian
            self._order = ">"
            version = struct.unpack(">I", raw_version)[0]
        if version == 1:
            raise ModelError(_(
                "{path} is GGUF version 1, which llama.cpp no longer reads: convert again",
                path=self._path,
            ))
        if version not in (2, 3):
            raise ModelError(_("{path} has an unsupported GGUF version {version}",
                               path=self._path, version=version))
        n_tensors = self._count()
        n_kv = self._count()
        metadata: dict[str, Scalar] = {}
        for _entry in range(n_kv):
            key = self._string()
            value_type = self._u32()
            value = self._value(value_type)
            if value is not None:
                metadata[key] = value
        tensors = tuple(self._tensor_info() for _ in range(n_tensors))
        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise ModelError(f"{self._path} has an invalid general.alignment: {alignment!r}")
        end_of_header = self._handle.tell()
        data_offset = -(-end_of_header // alignment) * alignment
        self._check_extent(tensors, data_offset)
        return GGUFInfo(path=self._path, version=version, size_bytes=self._size,
                        data_offset=data_offset, metadata=metadata, tensors=tensors)

    def _check_extent(self, tensors: tuple[TensorInfo, ...], data_offset: int) -> None:
        for tensor in tensors:
            if tensor.type is None or tensor.type.block_size == 0:
                raise ModelError(
                    f"{self._path}: tensor {tensor.name} has an unknown type {tensor.type_id}"
                )
            if data_offset + tensor.offset + tensor.n_bytes > self._size:
                raise ModelError(
                    f"{self._path} is truncated: tensor {tensor.name} ends past the end of the "
                    f"file ({self._size} bytes)"
                )

    def _read(self, n: int) -> bytes:
        data = self._handle.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def _unpack(self, fmt: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        value: int | float | bool = struct.unpack(self._order + fmt, self._read(size))[0]
        return value

    def _u32(self) -> int:
        return int(self._unpack("I"))

    def _count(self) -> int:
        n = int(self._unpack("Q"))
        if n > self._size:  # every item takes at least a byte: a larger count is garbage
            raise ModelError(f"{self._path} is corrupt: a count of {n} in its header")
        return n

    def _string(self) -> str:
        return self._read(self._count()).decode("utf-8", errors="replace")

    def _value(self, value_type: int) -> Scalar | None:
        if value_type == self._STRING:
            return self._string()
        if value_type == self._ARRAY:
            self._skip_array()
            return None
        fmt = self._SCALARS.get(value_type)
        if fmt is None:
            raise ModelError(f"{self._path} is corrupt: unknown metadata value type {value_type}")
        return self._unpack(fmt)

    def _skip_array(self) -> None:
        item_type = self._u32()
        n = self._count()
        fmt = self._SCALARS.get(item_type)
        if fmt is not None:
            self._handle.seek(n * struct.calcsize(fmt), 1)
        elif item_type == self._STRING:
            for _ in range(n):
                self._handle.seek(self._count(), 1)
        elif item_type == self._ARRAY:
            for _ in range(n):
                self._skip_array()
        else:
            raise ModelError(f"{self._path} is corrupt: unknown array item type {item_type}")

    def _tensor_info(self) -> TensorInfo:
        name = self._string()
        n_dims = self._u32()
        if n_dims > 8:
            raise ModelError(f"{self._path} is corrupt: tensor {name} has {n_dims} dimensions")
        shape = tuple(int(self._unpack("Q")) for _ in range(n_dims))
        type_id = self._u32()
        offset = int(self._unpack("Q"))
        return TensorInfo(name=name, shape=shape, type_id=type_id, offset=offset)

"""Lazy, safe readers for the files of a checkpoint folder: PyTorch zip pickles (.pth, .bin),
safetensors and sentencepiece models. Nothing here imports torch or runs pickled code.

A tensor is returned as a `LazyTensor`: its dtype, shape and where its bytes are. Rows are mapped
from the file only when `read_rows` asks for them, and unmapped when the caller drops the array,
so a reader never holds more than the rows being converted.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConversionError

# Element types by the codes safetensors uses; torch storages are translated to these codes.
_NUMPY_DTYPES: dict[str, str] = {
    "F64": "f8",
    "F32": "f4",
    "F16": "f2",
    "BF16": "u2",  # numpy has no bfloat16: read the raw bits, widen to float32 in read_rows
    "I64": "i8",
    "I32": "i4",
    "I16": "i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}

# The storage classes a torch pickle may name, and the element type of each.
_TORCH_STORAGES: dict[str, str] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}

_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_ZIP_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


class _TamperedPickle(Exception):
    """A pickle tried to change an object after building it (the BUILD opcode)."""


def _refuse_setstate(self: object, state: object) -> None:
    raise _TamperedPickle(type(self).__name__)


@dataclass(frozen=True, slots=True)
class FileRange:
    """A run of bytes inside a file, memory-mapped piece by piece on demand."""

    path: Path
    start: int
    length: int

    def map(self, offset: int, nbytes: int) -> NDArray[np.uint8]:
        """Map `nbytes` bytes at `offset` within this range, read-only."""
        if offset < 0 or offset + nbytes > self.length:
            raise ConversionError(
                f"{self.path} is truncated or corrupt: a tensor reaches past the end of its data"
            )
        if nbytes == 0:
            return np.empty(0, dtype=np.uint8)
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.start + offset,
                         shape=(nbytes,))


@dataclass(frozen=True, slots=True)
class LazyTensor:
    """A tensor in a checkpoint file, described but not yet read."""

    dtype: str
    shape: tuple[int, ...]
    data: FileRange
    offset: int  # byte offset of element 0 within `data`
    strides: tuple[int, ...]  # in elements, as torch stores them
    big_endian: bool = False

    # Pickle's BUILD opcode would otherwise rewrite the fields of a frozen slotted dataclass.
    __setstate__ = _refuse_setstate

    @property
    def itemsize(self) -> int:
        return np.dtype(_NUMPY_DTYPES[self.dtype]).itemsize

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_align(self) -> int:
        """Rows of a plain tensor can be read in any grouping."""
        return 1

    def is_contiguous(self) -> bool:
        return self.strides == _contiguous_strides(self.shape)

    def read_rows(self, start: int, stop: int) -> NDArray[Any]:
        """Rows `start:stop` along the first dimension (bfloat16 is widened to float32)."""
        if not 0 <= start <= stop <= self.n_rows:
            raise ValueError(f"rows {start}:{stop} out of range for shape {self.shape}")
        dtype = np.dtype(_NUMPY_DTYPES[self.dtype]).newbyteorder(">" if self.big_endian else "<")
        rest = self.shape[1:]
        if self.is_contiguous():
            row_bytes = math.prod(rest) * dtype.itemsize
            raw = self.data.map(self.offset + start * row_bytes, (stop - start) * row_bytes)
            rows = raw.view(dtype).reshape((stop - start, *rest) if self.shape else ())
        else:
            rows = self._read_strided(dtype)[start:stop]
        if self.dtype == "BF16":
            return (rows.astype(np.uint32) << 16).view(np.float32)
        return rows

    def load(self) -> NDArray[Any]:
        """The whole tensor (for small tensors and tests)."""
        return self.read_rows(0, self.n_rows)

    def _read_strided(self, dtype: np.dtype[Any]) -> NDArray[Any]:
        # Views saved with their base storage: map the span they cover and copy them out.
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides, strict=True))
        if any(n == 0 for n in self.shape):
            span = 0
        raw = self.data.map(self.offset, span * dtype.itemsize).view(dtype)
        byte_strides = tuple(s * dtype.itemsize for s in self.strides)
        view = np.lib.stride_tricks.as_strided(raw, self.shape, byte_strides, writeable=False)
        return np.ascontiguousarray(view)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    step = 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


# --- PyTorch zip checkpoints ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StorageKind:
    """What `find_class` returns for torch.HalfStorage and friends: only an element type."""

    dtype: str
    __setstate__ = _refuse_setstate


@dataclass(frozen=True, slots=True)
class _StorageRef:
    dtype: str
    data: FileRange
    __setstate__ = _refuse_setstate


def _rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object = False, backward_hooks: object = None,
                       metadata: object = None) -> LazyTensor:
    if not isinstance(storage, _StorageRef):
        raise ConversionError("malformed checkpoint pickle: a tensor without a storage")
    if not (_is_int(storage_offset) and _is_int_tuple(size) and _is_int_tuple(stride)):
        raise ConversionError("malformed checkpoint pickle: bad tensor offset, size or stride")
    assert isinstance(storage_offset, int) and isinstance(size, tuple)
    assert isinstance(stride, tuple)
    if len(size) != len(stride):
        raise ConversionError("malformed checkpoint pickle: size and stride differ in length")
    itemsize = np.dtype(_NUMPY_DTYPES[storage.dtype]).itemsize
    return LazyTensor(dtype=storage.dtype, shape=size, data=storage.data,
                      offset=storage_offset * itemsize, strides=stride)


def _rebuild_parameter(data: object, requires_grad: object = False,
                       backward_hooks: object = None) -> object:
    if not isinstance(data, LazyTensor):
        raise ConversionError("malformed checkpoint pickle: a parameter without a tensor")
    return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_int_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(_is_int(v) for v in value)


class _TensorUnpickler(pickle.Unpickler):
    """An unpickler that can build tensor descriptions and nothing else.

    Every global a pickle names goes through `find_class` (GLOBAL, STACK_GLOBAL, INST, OBJ and the
    copyreg extension codes alike), so refusing there refuses everything that could run code.
    """

    _ALLOWED: Mapping[tuple[str, str], object] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): OrderedDict,
        **{("torch", name): _StorageKind(dtype) for name, dtype in _TORCH_STORAGES.items()},
    }

    def __init__(self, file: IO[bytes], source: Path,
                 storage: Callable[[str, str, int], _StorageRef]) -> None:
        super().__init__(file)
        self._source = source
        self._storage = storage

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise ConversionError(
                f"unsafe pickle in {self._source}: it refers to {module}.{name}, which is not "
                "part of a tensor; refusing to load it (nothing was executed)"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageKind) or not isinstance(pid[2], str)
                or not _is_int(pid[4])):
            raise ConversionError(
                f"unsafe pickle in {self._source}: unexpected persistent id {pid!r:.80}"
            )
        return self._storage(pid[1].dtype, pid[2], pid[4])


def read_torch_checkpoint(path: Path) -> dict[str, LazyTensor]:
    """The tensors of a zip-format `torch.save` file (.pth, .bin), without torch."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ConversionError(
            f"{path} is not a zip-format PyTorch checkpoint (the legacy torch.save format, "
            "from before PyTorch 1.6, is not supported)"
        ) from exc
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ConversionError(f"{path} does not look like a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = _read_byteorder(archive, prefix) == "big"

        def storage(dtype: str, key: str, numel: int) -> _StorageRef:
            data = _stored_member(archive, path, f"{prefix}data/{key}")
            itemsize = np.dtype(_NUMPY_DTYPES[dtype]).itemsize
            if data.length < numel * itemsize:
                raise ConversionError(f"{path} is truncated: storage {key} is too short")
            return _StorageRef(dtype, data)

        with archive.open(pickles[0]) as pkl:
            try:
                root = _TensorUnpickler(pkl, path, storage).load()
            except ConversionError:
                raise
            except _TamperedPickle as exc:
                raise ConversionError(
                    f"unsafe pickle in {path}: it rewrites a {exc} after building it; refusing "
                    "to load it"
                ) from exc
            except Exception as exc:  # a malformed pickle can fail in many ways
                raise ConversionError(f"cannot read the pickle in {path}: {exc}") from exc
    if not isinstance(root, dict):
        raise ConversionError(f"{path} does not hold a dictionary of tensors")
    tensors = {k: v for k, v in root.items() if isinstance(k, str) and isinstance(v, LazyTensor)}
    # Frozen slotted classes already refuse the pickle BUILD opcode; check anyway that every
    # tensor still points into this file.
    for name, tensor in tensors.items():
        if not (isinstance(tensor.data, FileRange) and tensor.data.path == path
                and tensor.dtype in _NUMPY_DTYPES):
            raise ConversionError(f"unsafe pickle in {path}: tensor {name} was tampered with")
    if not tensors:
        raise ConversionError(f"{path} holds no tensors")
    if big_endian:
        tensors = {k: _big_endian(v) for k, v in tensors.items()}
    return tensors


def _big_endian(tensor: LazyTensor) -> LazyTensor:
    return LazyTensor(tensor.dtype, tensor.shape, tensor.data, tensor.offset, tensor.strides,
                      big_endian=True)


def _read_byteorder(archive: zipfile.ZipFile, prefix: str) -> str:
    try:
        return archive.read(f"{prefix}byteorder").decode("ascii").strip()
    except KeyError:
        return "little"


def _stored_member(archive: zipfile.ZipFile, path: Path, name: str) -> FileRange:
    """Where an uncompressed zip member's bytes start in the zip file itself."""
    try:
        info = archive.getinfo(name)
    except KeyError as exc:
        raise ConversionError(f"{path} is incomplete: it has no {name}") from exc
    if info.compress_type != zipfile.ZIP_STORED:
        raise ConversionError(f"{path}: {name} is compressed; torch checkpoints store tensors "
                              "uncompressed, re-save the file with torch.save")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(_ZIP_LOCAL_HEADER.size)
    if len(header) != _ZIP_LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise ConversionError(f"{path} is corrupt: bad zip header for {name}")
    fields = _ZIP_LOCAL_HEADER.unpack(header)
    name_len, extra_len = fields[9], fields[10]
    start = info.header_offset + _ZIP_LOCAL_HEADER.size + name_len + extra_len
    return FileRange(path, start, info.file_size)


# --- safetensors ------------------------------------------------------------------------------


def read_safetensors(path: Path) -> dict[str, LazyTensor]:
    """The tensors of a .safetensors file: an 8-byte header length, a JSON header, raw data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ConversionError(f"{path} is not a safetensors file (too short)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(_MAX_SAFETENSORS_HEADER, size - 8):
                raise ConversionError(f"{path} is not a safetensors file (bad header length)")
            header = json.loads(f.read(header_len))
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not a safetensors file (bad header)") from exc
    if not isinstance(header, dict):
        raise ConversionError(f"{path} is not a safetensors file (bad header)")
    data_start = 8 + header_len
    data = FileRange(path, data_start, size - data_start)
    tensors: dict[str, LazyTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConversionError(f"{path}: bad header entry for {name}") from exc
        if dtype not in _NUMPY_DTYPES:
            raise ConversionError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        if not _is_int_tuple(shape) or not (_is_int(begin) and _is_int(end)):
            raise ConversionError(f"{path}: bad header entry for {name}")
        tensor = LazyTensor(dtype=dtype, shape=shape, data=data, offset=begin,
                            strides=_contiguous_strides(shape))
        if end - begin != tensor.nbytes or end > data.length:
            raise ConversionError(f"{path} is truncated or corrupt: tensor {name} does not fit")
        tensors[name] = tensor
    return tensors


# --- sentencepiece ----------------------------------------------------------------------------

# sentencepiece's piece types; GGUF's tokenizer.ggml.token_type uses the same numbers.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = range(1, 7)


@dataclass(frozen=True, slots=True)
class SentencePieceVocab:
    """The pieces of a sentencepiece model with their scores and types, and its special ids."""

    pieces: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int  # -1 when the model has none


def read_sentencepiece(path: Path) -> SentencePieceVocab:
    """Read a sentencepiece `tokenizer.model`."""
    import sentencepiece

    try:
        proto = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"cannot read the tokenizer {path}: {exc.strerror or exc}") from exc
    try:
        sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    except Exception as exc:  # sentencepiece raises RuntimeError or OSError
        raise ConversionError(f"{path} is not a sentencepiece model: {exc}") from exc
    n = sp.vocab_size()
    # The processor does not expose "user defined"; the model proto does.
    types = _piece_types(proto)
    if len(types) != n:
        raise ConversionError(f"{path}: cannot read the piece types of the sentencepiece model")
    return SentencePieceVocab(
        pieces=[sp.id_to_piece(i) for i in range(n)],
        scores=[sp.get_score(i) for i in range(n)],
        types=types,
        bos_id=sp.bos_id(),
        eos_id=sp.eos_id(),
        unk_id=sp.unk_id(),
        pad_id=sp.pad_id(),
    )


def _piece_types(proto: bytes) -> list[int]:
    """The `type` of each `pieces` entry (field 1) of a sentencepiece ModelProto."""
    types = []
    for field, value in _proto_fields(proto):
        if field == 1 and isinstance(value, bytes):
            piece_type = TOKEN_NORMAL
            for sub_field, sub_value in _proto_fields(value):
                if sub_field == 3 and isinstance(sub_value, int):
                    piece_type = sub_value
            types.append(piece_type)
    return types


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of a protobuf message; fixed-size values as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ConversionError("malformed sentencepiece model")
        if pos > len(buf):
            raise ConversionError("malformed sentencepiece model")
        fields.append((field, value))
    return fields


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ConversionError("malformed sentencepiece model")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7

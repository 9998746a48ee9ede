"""Read the tensors of a zip-format `torch.save` file (Meta's consolidated.NN.pth shards, Hugging
Face's pytorch_model*.bin) without torch: the pickle through the allow-list unpickler, the
storages located in place inside the zip file."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from bot.errors import ConversionError
from bot.models.lazy_tensor import NUMPY_DTYPES, FileRange, LazyTensor, TamperedPickle
from bot.models.tensor_unpickler import StorageRef, TensorUnpickler

_ZIP_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


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

        def storage(dtype: str, key: str, numel: int) -> StorageRef:
            data = _stored_member(archive, path, f"{prefix}data/{key}")
            itemsize = np.dtype(NUMPY_DTYPES[dtype]).itemsize
            if data.length < numel * itemsize:
                raise ConversionError(f"{path} is truncated: storage {key} is too short")
            return StorageRef(dtype, data)

        with archive.open(pickles[0]) as pkl:
            try:
                root = TensorUnpickler(pkl, path, storage).load()
            except ConversionError:
                raise
            except TamperedPickle as exc:
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
                and tensor.dtype in NUMPY_DTYPES):
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

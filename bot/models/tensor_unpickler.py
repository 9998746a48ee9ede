"""The allow-list unpickler of torch checkpoints: it builds tensor descriptions (`LazyTensor`)
from a `torch.save` pickle and refuses every other global, so no pickled code ever runs."""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from bot.errors import ConversionError
from bot.models.lazy_tensor import (
    NUMPY_DTYPES,
    FileRange,
    LazyTensor,
    is_count,
    is_count_tuple,
    refuse_setstate,
)

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


@dataclass(frozen=True, slots=True)
class _StorageKind:
    """What `find_class` returns for torch.HalfStorage and friends: only an element type."""

    dtype: str
    __setstate__ = refuse_setstate


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage a pickle refers to, found in its file: the element type and where the bytes are."""

    dtype: str
    data: FileRange
    __setstate__ = refuse_setstate


@dataclass(frozen=True, slots=True)
class _Allowed:
    """What `find_class` returns for an allowed global: a call to `build`, and nothing a
    pickle can change. The BUILD opcode sets attributes of whatever it is given, a function's
    included (`__defaults__`, `__code__`): the functions and classes themselves never reach it."""

    build: Callable[..., object]
    __setstate__ = refuse_setstate

    def __call__(self, *args: object) -> object:
        return self.build(*args)


def _rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object = False, backward_hooks: object = None,
                       metadata: object = None) -> LazyTensor:
    if not isinstance(storage, StorageRef):
        raise ConversionError("malformed checkpoint pickle: a tensor without a storage")
    if not (is_count(storage_offset) and is_count_tuple(size) and is_count_tuple(stride)):
        raise ConversionError("malformed checkpoint pickle: bad tensor offset, size or stride")
    assert isinstance(storage_offset, int) and isinstance(size, tuple)
    assert isinstance(stride, tuple)
    if len(size) != len(stride):
        raise ConversionError("malformed checkpoint pickle: size and stride differ in length")
    itemsize = np.dtype(NUMPY_DTYPES[storage.dtype]).itemsize
    if math.prod(size) * itemsize > storage.data.length:
        # Strides of 0 (or overlapping ones) let a small storage stand for a huge tensor, which
        # reading would allocate whole: a checkpoint's weights are never saved that way.
        raise ConversionError(
            f"malformed checkpoint pickle: a tensor of shape {size} needs "
            f"{math.prod(size) * itemsize} bytes but its storage holds {storage.data.length}"
        )
    return LazyTensor(dtype=storage.dtype, shape=size, data=storage.data,
                      offset=storage_offset * itemsize, strides=stride)


def _rebuild_parameter(data: object, requires_grad: object = False,
                       backward_hooks: object = None) -> object:
    if not isinstance(data, LazyTensor):
        raise ConversionError("malformed checkpoint pickle: a parameter without a tensor")
    return data


class TensorUnpickler(pickle.Unpickler):
    """An unpickler that can build tensor descriptions and nothing else.

    Every global a pickle names goes through `find_class` (GLOBAL, STACK_GLOBAL, INST, OBJ and the
    copyreg extension codes alike), so refusing there refuses everything that could run code.
    """

    _ALLOWED: Mapping[tuple[str, str], object] = {
        ("torch._utils", "_rebuild_tensor_v2"): _Allowed(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_parameter"): _Allowed(_rebuild_parameter),
        ("collections", "OrderedDict"): _Allowed(OrderedDict),
        **{("torch", name): _StorageKind(dtype) for name, dtype in _TORCH_STORAGES.items()},
    }

    def __init__(self, file: IO[bytes], source: Path,
                 storage: Callable[[str, str, int], StorageRef]) -> None:
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
                or not is_count(pid[4])):
            raise ConversionError(
                f"unsafe pickle in {self._source}: unexpected persistent id {pid!r:.80}"
            )
        return self._storage(pid[1].dtype, pid[2], pid[4])

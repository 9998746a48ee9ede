"""The checkpoint reader refuses pickles that would change what it runs, and tensors that would
make it allocate more than the file holds; .pth zips crafted by hand, as an attacker would."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from bot.errors import ConversionError
from bot.models import tensor_unpickler
from bot.models.lazy_tensor import FileRange, LazyTensor
from bot.models.torch_checkpoint import read_torch_checkpoint
from tests.models.checkpoints import (
    StoredTensor,
    _Pickle,
    encode,
    write_torch_zip,
    write_torch_zip_stream,
)

HUGE = (1 << 20, 1 << 20)
"""4 TiB of float32: what a few bytes of storage with strides of 0 could stand for."""


def build_on(module: str, name: str, attribute: str, value: bytes) -> bytes:
    """A key/value pair whose value is the global `module.name`, then changed by BUILD:
    state (None, {attribute: value}) sets the attribute with setattr."""
    p = _Pickle()
    p.out.clear()
    p.str_("changed")
    p.global_(module, name)
    p.out += pickle.NONE + pickle.EMPTY_DICT
    p.str_(attribute)
    p.out += value + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD
    return bytes(p.out)


@pytest.mark.parametrize(("module", "name"), [
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
])
def test_a_pickle_cannot_change_an_allowed_function(tmp_path: Path, module: str,
                                                     name: str) -> None:
    rebuild = tensor_unpickler._rebuild_tensor_v2
    defaults = rebuild.__defaults__
    # requires_grad, backward_hooks, metadata: a pickle that sets them changes every later read
    new_defaults = pickle.MARK + pickle.NEWTRUE + pickle.NONE + pickle.NONE + pickle.TUPLE
    path = tmp_path / "changed.pth"
    write_torch_zip(path, {"w": np.ones(4, np.float32)}, dtype="F32",
                    extra_pickle=build_on(module, name, "__defaults__", new_defaults))
    try:
        with pytest.raises(ConversionError, match="unsafe pickle .*rewrites"):
            read_torch_checkpoint(path)
        assert rebuild.__defaults__ == defaults
    finally:
        rebuild.__defaults__ = defaults


def test_a_state_dict_with_its_metadata_still_reads(tmp_path: Path) -> None:
    # torch.save(model.state_dict()) pickles an OrderedDict whose `_metadata` attribute is set
    # by BUILD on the dict itself: that stays allowed.
    p = _Pickle()
    p.global_("collections", "OrderedDict")
    p.out += pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.MARK
    p.str_("w")
    p.tensor(StoredTensor("0", "F32", 4, (4,), (1,)))
    p.out += pickle.SETITEMS + pickle.EMPTY_DICT
    p.str_("_metadata")
    p.out += pickle.EMPTY_DICT + pickle.SETITEM + pickle.BUILD + pickle.STOP
    path = tmp_path / "state_dict.pth"
    blob = encode(np.arange(4, dtype=np.float32), "F32")
    write_torch_zip_stream(path, bytes(p.out), [("0", len(blob), lambda f: f.write(blob))])
    tensors = read_torch_checkpoint(path)
    np.testing.assert_array_equal(tensors["w"].load(), np.arange(4, dtype=np.float32))


def test_a_tensor_larger_than_its_storage_is_refused(tmp_path: Path) -> None:
    blob = encode(np.ones(4, np.float32), "F32")
    path = tmp_path / "broadcast.pth"
    write_torch_zip(path, {}, dtype="F32",
                    views={"huge": (StoredTensor("s", "F32", 4, HUGE, (0, 0)), blob)})
    with pytest.raises(ConversionError, match=r"shape \(1048576, 1048576\) needs .* holds 16"):
        read_torch_checkpoint(path)


def test_a_strided_read_never_allocates_more_than_the_file_holds(tmp_path: Path) -> None:
    # Whatever reader built it, a tensor is read within its bytes.
    path = tmp_path / "blob"
    path.write_bytes(encode(np.ones(4, np.float32), "F32"))
    tensor = LazyTensor(dtype="F32", shape=HUGE, data=FileRange(path, 0, 16), offset=0,
                        strides=(0, 0))
    with pytest.raises(ConversionError, match="would need"):
        tensor.load()


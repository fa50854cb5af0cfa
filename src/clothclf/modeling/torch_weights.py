"""Read a PyTorch state dict saved in the legacy (pre-zip) format with NumPy alone: no torch, no trust.

A ``.pth`` file is a pickle, and unpickling runs whatever callables it names. :func:`read_state_dict`
unpickles with :class:`StateDictUnpickler`, which resolves only the four names a float state dict
needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the float storages) to
harmless stand-ins and refuses every other name, so a hostile file can do nothing but fail to load.

The legacy layout, as ``torch.save(..., _use_new_zipfile_serialization=False)`` writes it: four pickles
(the magic number, the protocol version, a sys-info dict, then the state dict whose tensors point at
storages through persistent ids ``('storage', type, key, location, numel, ...)``), a fifth pickle
listing the storage keys, then per key in that order an 8-byte little-endian element count and the
raw little-endian data.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from clothclf.errors import ClothclfError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
#: Storage classes a float state dict may name, and the dtype of their data.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
}


class WeightsFileError(ClothclfError):
    """A weights file that is not a legacy PyTorch state dict of plain tensors, or names other code."""


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


def _rebuild_tensor(storage: _Storage, offset: int, shape: tuple, stride: tuple, *_rest) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


class StateDictUnpickler(pickle.Unpickler):
    """An unpickler that knows a state dict's four names and refuses all others."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise WeightsFileError(f"the weights file names {module}.{name}, which a state dict never needs")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsFileError("the weights file refers to data in a way a state dict never does")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise WeightsFileError("the weights file names a storage type a state dict never needs")
        return _Storage(str(key), storage_type.dtype, int(numel))


def _load(stream: BinaryIO):
    try:
        return StateDictUnpickler(stream).load()
    except WeightsFileError:
        raise
    except Exception as error:  # a truncated or foreign file: pickle raises many kinds
        raise WeightsFileError(f"not a legacy PyTorch weights file ({type(error).__name__})") from None


def _read_storages(stream: BinaryIO, keys: list, storages: dict[str, _Storage]) -> dict[str, np.ndarray]:
    data = {}
    for key in keys:
        storage = storages.get(str(key))
        count = int.from_bytes(stream.read(8), "little")
        if storage is None or count != storage.numel:
            raise WeightsFileError("the weights file's data does not match its tensors")
        raw = stream.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise WeightsFileError("the weights file is truncated")
        data[storage.key] = np.frombuffer(raw, storage.dtype)
    return data


def _materialise(ref: _TensorRef, data: dict[str, np.ndarray]) -> np.ndarray:
    flat = data[ref.storage.key]
    itemsize = flat.dtype.itemsize
    needed = (
        ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) + 1
        if ref.shape
        else ref.offset + 1
    )
    if needed > flat.size:
        raise WeightsFileError("a tensor of the weights file reaches past its data")
    strides = tuple(s * itemsize for s in ref.stride)
    view = np.lib.stride_tricks.as_strided(flat[ref.offset :], ref.shape, strides, writeable=False)
    return np.array(view, dtype=np.float32 if flat.dtype.kind == "f" else flat.dtype)


def read_state_dict(source: str | Path | bytes) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format PyTorch state dict (a path or its bytes), by name, as NumPy arrays.

    Raises :class:`WeightsFileError` for any other file, including one that names other code."""
    stream = io.BytesIO(source if isinstance(source, bytes) else Path(source).read_bytes())
    if _load(stream) != LEGACY_MAGIC or _load(stream) != LEGACY_PROTOCOL:
        raise WeightsFileError("not a legacy PyTorch weights file (no magic number)")
    _load(stream)  # sys info: byte order and type sizes (little-endian assumed, as every writer today)
    state = _load(stream)
    keys = _load(stream)
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise WeightsFileError("the weights file holds no state dict")
    refs = {name: ref for name, ref in state.items() if isinstance(ref, _TensorRef)}
    data = _read_storages(stream, keys, {ref.storage.key: ref.storage for ref in refs.values()})
    return {str(name): _materialise(ref, data) for name, ref in refs.items()}


def write_state_dict(tensors: dict[str, np.ndarray]) -> bytes:
    """``tensors`` as the bytes of a legacy-format PyTorch state dict of float32 tensors, laid out as torch
    writes it (each tensor its own storage), with no torch needed: for tests and fixtures."""
    arrays = {name: np.asarray(t, dtype="<f4", order="C") for name, t in tensors.items()}
    out = io.BytesIO()
    for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
        pickle.dump(header, out, protocol=2)
    out.write(_state_dict_pickle(arrays))
    pickle.dump(list(arrays), out, protocol=2)
    for array in arrays.values():
        out.write(array.size.to_bytes(8, "little") + array.tobytes())
    return out.getvalue()


def _op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _op_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def _op_ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(b"J" + int(v).to_bytes(4, "little", signed=True) for v in values) + b"t"


def _state_dict_pickle(arrays: dict[str, np.ndarray]) -> bytes:
    """Protocol-2 opcodes of ``OrderedDict(name=_rebuild_tensor_v2(storage, 0, shape, stride, False, {}))``."""
    ordered_dict = _op_global("collections", "OrderedDict") + b")R"
    items = []
    for name, array in arrays.items():
        storage = b"(" + _op_str("storage") + _op_global("torch", "FloatStorage")
        storage += _op_str(name) + _op_str("cpu") + b"J" + array.size.to_bytes(4, "little") + b"Nt" + b"Q"
        stride = tuple(s // array.itemsize for s in array.strides)
        args = (
            storage + b"J\x00\x00\x00\x00" + _op_ints(array.shape) + _op_ints(stride) + b"\x89" + ordered_dict
        )
        items.append(_op_str(name) + _op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR")
    return b"\x80\x02" + ordered_dict + b"(" + b"".join(items) + b"u."

"""Where `tw.load` reads arrays from: a flat mapping, a pytree, or a file read tensor by
tensor (`.safetensors`, `.npz`). Every source gives its keys and each tensor's shape and
dtype before any data is read. And the `.safetensors` file `tw.export` writes, tensor by
tensor."""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._core.errors import ArgumentError
from .._frameworks.checkpoint import (
    Layout,
    is_tensor,
    is_torch_module,
    meta_of,
    to_numpy,
    torch_layouts,
)

_SPLIT = re.compile(r"[./]")

_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


#: The safetensors code of each dtype numpy (with JAX's `ml_dtypes`) holds.
_ST_CODES = {jnp.dtype(name): code for code, name in _ST_DTYPES.items()}


def safetensors_dtype(dtype: Any) -> str | None:
    """The safetensors code of `dtype` (`"F32"`), or `None` when the format has none."""
    return _ST_CODES.get(jnp.dtype(dtype))


def write_safetensors(
    path: str,
    metas: list[tuple[str, tuple[int, ...], np.dtype]],
    arrays: Iterable[np.ndarray],
) -> None:
    """Write the safetensors file `path`: the header from `metas` (`(key, shape, dtype)`,
    in the order the data follows: give larger items first, and each tensor's data is
    aligned to its item size), then each of `arrays` (C-contiguous, as `metas` says)
    as it comes, so only one need exist at a time."""
    header: dict[str, Any] = {}
    end = 0
    for key, shape, dtype in metas:
        size = math.prod(shape) * dtype.itemsize
        header[key] = {
            "dtype": safetensors_dtype(dtype),
            "shape": list(shape),
            "data_offsets": [end, end + size],
        }
        end += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for (key, shape, dtype), array in zip(metas, arrays, strict=True):
            assert array.shape == shape and array.dtype == dtype, key
            f.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
            del array  # before the next one is made


def normalise(key: str) -> str:
    """A key with `.` and `/` both read as separators, written with `/`."""
    return "/".join(s for s in _SPLIT.split(key) if s)


class Source:
    """Arrays by key: `keys`, `meta(key) -> (shape, dtype)`, `read(key) -> numpy`."""

    #: The convention the source is in, when the source itself says (a pytree's framework).
    convention: str | None = None
    #: Are the arrays `read` returns fresh (a file's), not memory the caller holds?
    owned = True
    #: `{key: (family, layout)}` of the weights whose layout the source itself declares
    #: (a pytree's layer types, a PyTorch module's); a file declares none.
    layouts: dict[str, tuple[str, Layout]] = {}
    #: The bytes of array data read so far (what `read` and `read_index` returned).
    bytes_read = 0

    def keys(self) -> list[str]:
        """The source's keys, in its own order."""
        raise NotImplementedError

    def meta(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """`(shape, dtype)` of the array at `key`, without reading it."""
        raise NotImplementedError

    def read(self, key: str) -> np.ndarray:
        """The array at `key`, as numpy."""
        raise NotImplementedError

    def read_index(self, key: str, index: tuple[slice, ...]) -> np.ndarray:
        """Part of a tensor; files read only that part."""
        return self.read(key)[index]


class MappingSource(Source):
    owned = False

    def __init__(self, mapping: Mapping[str, Any]) -> None:
        self.mapping = mapping

    def keys(self) -> list[str]:
        return list(self.mapping)

    def meta(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        return meta_of(self.mapping[key])

    def read(self, key: str) -> np.ndarray:
        out = to_numpy(self.mapping[key])
        self.bytes_read += out.nbytes
        return out


class SafetensorsSource(Source):
    """A `.safetensors` file. Keys, shapes, dtypes and offsets come from its header (an
    8-byte length, then JSON); a whole tensor is read with one `readinto` into a buffer of
    its own memory map, released when the array is dropped, so loading never holds more
    than the tensor in flight besides what it built (a `safe_open` read, or numpy's heap,
    leaves ~0.2x the model behind). Part of a tensor (one shard) is read the same way:
    its rows, a contiguous range of the file."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if n > os.path.getsize(path) - 8:
                    raise ValueError("header length past the end of the file")
                header = json.loads(f.read(n))
        except ValueError as e:
            raise ArgumentError(f"tw.load: {path!r} is not a safetensors file ({e}).") from None
        self._start = 8 + n
        self._meta: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        for k, v in header.items():
            if k == "__metadata__":
                continue
            dtype = _ST_DTYPES.get(v["dtype"])
            if dtype is None:
                raise ArgumentError(
                    f"tw.load: tensor {k!r} of {path!r} has dtype {v['dtype']}, which numpy "
                    "cannot hold; convert the file, or load it yourself and pass a mapping."
                )
            self._meta[k] = (tuple(v["shape"]), jnp.dtype(dtype))
            self._offsets[k] = (v["data_offsets"][0], v["data_offsets"][1])

    def keys(self) -> list[str]:
        return list(self._meta)

    def meta(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        return self._meta[key]

    def read(self, key: str) -> np.ndarray:
        shape, _ = self._meta[key]
        return self._rows(key, 0, shape[0] if shape else 1)

    def read_index(self, key: str, index: tuple[slice, ...]) -> np.ndarray:
        """Part of the tensor: when `index` takes rows of axis 0 only, those rows alone
        (one contiguous range of the file: a C-order tensor's rows are); otherwise
        safetensors' `safe_open(...).get_slice`, which reads only the part."""
        shape, _ = self._meta[key]
        first = index[0] if index else slice(None)
        if shape and isinstance(first, slice) and all(r == slice(None) for r in index[1:]):
            start, stop, step = first.indices(shape[0])
            if step == 1:
                return self._rows(key, start, max(start, stop))
        with _safe_open()(self.path, framework="numpy") as f:
            out = f.get_slice(key)[index]
        self.bytes_read += out.nbytes
        return out

    def _rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` of the tensor at `key` (all of a scalar), with one `readinto`
        into a buffer of our own (page aligned from 1 MiB: `device_put` takes it as is; a
        `safe_open` slice is heap memory, which the allocator keeps: a sharded load held
        1.12-1.23x the model with it)."""
        shape, dtype = self._meta[key]
        begin, end = self._offsets[key]
        row = (end - begin) // shape[0] if shape and shape[0] else end - begin
        out = staging((stop - start, *shape[1:]) if shape else (), dtype)
        raw = out.reshape(-1).view(np.uint8)
        want = row * (stop - start) if shape else end - begin
        with open(self.path, "rb") as f:
            f.seek(self._start + begin + row * start)
            got = f.readinto(raw.data) if want else 0
        if got != want:
            raise ArgumentError(f"tw.load: {self.path!r} ends inside tensor {key!r}.")
        self.bytes_read += got
        return out


#: A private anonymous map, its pages made at once: `mmap.mmap(-1, n)` alone is a *shared*
#: one on POSIX, memory of the kernel's shmem file system, whose first-touch page faults
#: cost more (reading 300 MB into a private one took ~0.27 s against ~0.43 s, median of 9
#: paired runs, 2-core VM), and `MAP_POPULATE` makes the pages in one call instead of one
#: fault each (a 1.07 GB load: 0.83 and 0.72 s against 0.97 and 0.95 s, abstract and
#: concrete). Reading into it is most of `tw.load`. (Windows has no `flags`: the default.)
_PRIVATE = (
    {"flags": mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)}
    if hasattr(mmap, "MAP_PRIVATE")
    else {}
)


def staging(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised host array; one of 1 MiB or more lives in its own private anonymous
    memory map, returned to the system when the array is dropped (numpy's heap would keep
    it). Page aligned and C-contiguous, so on the CPU `jax.device_put` uses it as is, with
    no copy."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < 1 << 20:
        return np.empty(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes, **_PRIVATE), dtype=dtype).reshape(shape)


def _safe_open() -> Any:
    try:
        from safetensors import safe_open
    except ImportError:
        raise ArgumentError(
            "Reading part of a .safetensors tensor (a shard along an axis other than its "
            'first) needs the safetensors package: pip install "jax-treewalk[checkpoints]".'
        ) from None
    return safe_open


class NpzSource(Source):
    """A `.npz` file; each member's header is read for its shape, its data only on `read`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._meta: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._member: dict[str, str] = {}
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if not member.endswith(".npy"):
                    continue
                with z.open(member) as fp:
                    version = np.lib.format.read_magic(fp)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(fp)
                key = member[: -len(".npy")]
                self._meta[key] = (tuple(shape), np.dtype(dtype))
                self._member[key] = member

    def keys(self) -> list[str]:
        return list(self._meta)

    def meta(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        return self._meta[key]

    def read(self, key: str) -> np.ndarray:
        with zipfile.ZipFile(self.path) as z, z.open(self._member[key]) as fp:
            out = np.lib.format.read_array(fp)
        self.bytes_read += out.nbytes
        return out


def open_source(source: Any, flatten: Any) -> Source:
    """A `Source` for what `tw.load` was given. `flatten(tree) -> (convention, {key:
    array}, {key: (family, layout)})` flattens a pytree source."""
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ArgumentError(f"tw.load: no file {path!r}.")
        if path.endswith(".safetensors"):
            return SafetensorsSource(path)
        if path.endswith(".npz"):
            return NpzSource(path)
        raise ArgumentError(
            f"tw.load reads .safetensors and .npz files; got {path!r}. Load other formats "
            "yourself and pass the mapping of arrays."
        )
    if is_torch_module(source):
        # Its state_dict, and the layouts its layers' types declare (a Conv1D is (in, out)).
        out = MappingSource(source.state_dict())
        out.convention, out.layouts = "torch", torch_layouts(source)
        return out
    if isinstance(source, Mapping) and all(
        isinstance(k, str) and is_tensor(v) for k, v in source.items()
    ):
        return MappingSource(source)
    convention, flat, layouts = flatten(source)
    out = MappingSource(flat)
    out.convention, out.layouts = convention, layouts
    return out

"""Where `tw.load` reads arrays from: a flat mapping, a pytree, or a file read tensor by
tensor (`.safetensors`, `.npz`). Every source gives its keys and each tensor's shape and
dtype before any data is read."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._errors import ArgumentError
from ._frameworks.checkpoint import is_tensor, meta_of, to_numpy

_SPLIT = re.compile(r"[./]")

_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
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


def normalise(key: str) -> str:
    """A key with `.` and `/` both read as separators, written with `/`."""
    return "/".join(s for s in _SPLIT.split(key) if s)


class Source:
    """Arrays by key: `keys`, `meta(key) -> (shape, dtype)`, `read(key) -> numpy`."""

    #: The convention the source is in, when the source itself says (a pytree's framework).
    layout: str | None = None

    def keys(self) -> list[str]:
        raise NotImplementedError

    def meta(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        raise NotImplementedError

    def read(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def read_index(self, key: str, index: tuple[slice, ...]) -> np.ndarray:
        """Part of a tensor; files read only that part."""
        return self.read(key)[index]


class MappingSource(Source):
    def __init__(self, mapping: Mapping[str, Any]) -> None:
        self.mapping = mapping

    def keys(self) -> list[str]:
        return list(self.mapping)

    def meta(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        return meta_of(self.mapping[key])

    def read(self, key: str) -> np.ndarray:
        return to_numpy(self.mapping[key])


class SafetensorsSource(Source):
    """A `.safetensors` file. Every read opens the file anew, so the memory map of what was
    read is released with each tensor: the process never holds more than one."""

    def __init__(self, path: str) -> None:
        self.path = path
        safe_open = _safe_open()
        self._meta: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        import jax.numpy as jnp

        with safe_open(path, framework="numpy") as f:
            for k in f.keys():
                s = f.get_slice(k)
                self._meta[k] = (tuple(s.get_shape()), jnp.dtype(_ST_DTYPES[s.get_dtype()]))

    def keys(self) -> list[str]:
        return list(self._meta)

    def meta(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        return self._meta[key]

    def read(self, key: str) -> np.ndarray:
        with _safe_open()(self.path, framework="numpy") as f:
            return f.get_tensor(key)

    def read_index(self, key: str, index: tuple[slice, ...]) -> np.ndarray:
        with _safe_open()(self.path, framework="numpy") as f:
            return f.get_slice(key)[index]


def _safe_open() -> Any:
    try:
        from safetensors import safe_open
    except ImportError:
        raise ArgumentError(
            "Reading a .safetensors file needs the safetensors package: "
            'pip install "jax-treewalk[checkpoints]".'
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
            return np.lib.format.read_array(fp)


def open_source(source: Any, flatten: Any) -> Source:
    """A `Source` for what `tw.load` was given. `flatten(tree) -> (layout, {key: array})`
    flattens a pytree source."""
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
    if isinstance(source, Mapping) and all(
        isinstance(k, str) and is_tensor(v) for k, v in source.items()
    ):
        return MappingSource(source)
    layout, flat = flatten(source)
    out = MappingSource(flat)
    out.layout = layout
    return out

"""`tw.export`: a model's arrays as a flat `{key: numpy array}` in a framework's
convention — a PyTorch `state_dict` — or written straight to a `.safetensors` file, one
tensor at a time (from a model sharded over several processes too)."""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple, overload

import jax
import numpy as np
from jax.experimental import multihost_utils

from .._core.errors import ArgumentError
from .._core.types import PyTree
from .._frameworks.checkpoint import KEY_SEPARATOR, LAYOUTS, VECTOR_ROLES, Layout, conversion
from .._frameworks.composite import Rows
from .leaves import Leaf, check_convention, held, index_key, model_leaves, on_host
from .rules import Layouts, Rename, layouts_of, renamer_of
from .sources import normalise, safetensors_dtype, staging, write_safetensors
from .step import orient, rows


class _Part(NamedTuple):
    """One array's share of a key: the rows `take` of the key it fills (all when `None`),
    from the rows `put` of the array as `convention` lays it out; a sum's terms after the
    first are written as zeros (`first` is false)."""

    leaf: Leaf
    take: Rows | None
    put: Rows | None
    first: bool
    override: str | None


@overload
def export(
    tree: PyTree,
    path: None = None,
    *,
    convention: str = "torch",
    rename: Rename = None,
    layouts: Layouts = None,
    into: str | None = None,
) -> dict[str, np.ndarray]: ...


@overload
def export(
    tree: PyTree,
    path: str | os.PathLike[str],
    *,
    convention: str = "torch",
    rename: Rename = None,
    layouts: Layouts = None,
    into: str | None = None,
) -> None: ...


def export(
    tree: PyTree,
    path: str | os.PathLike[str] | None = None,
    *,
    convention: str = "torch",
    rename: Rename = None,
    layouts: Layouts = None,
    into: str | None = None,
) -> dict[str, np.ndarray] | None:
    """The arrays of `tree` as a flat `{key: numpy array}` in the checkpoint convention
    `convention`, or written to the `.safetensors` file `path`: the inverse of
    [`tw.load`][treewalk.load].

    Names and layouts of the known layers are converted as `tw.load` converts them, the
    other way: an NNX or linen `kernel` `(in, out)` becomes a PyTorch `weight`
    `(out, in)`, a `scale` becomes `weight`, a conv bias is a vector. Keys are the
    segments of each array's path, with the last one renamed, joined with `.` for
    `"torch"` and `"equinox"` and with `/` for `"flax"` and `"haiku"`. So
    `tw.load(model, tw.export(model, convention=C), convention=C)` gives `model` back, for
    every framework and every `C`. PRNG keys and NNX RNG state are left out.

    **To a file.** With `path`, the tensors are written one at a time, each converted
    just before it is written, so no more than one of them (and the parts it is made of)
    is ever held besides the model; nothing is returned. Tensors are ordered by item
    size, largest first (each one's data aligned to its item size, as safetensors'
    writer does), else in the model's order. **Across processes** (`jax.distributed`),
    every process calls it with the same `path`; process 0 writes the file, and an
    array sharded over devices of other processes is gathered one at a time (JAX's
    all-gather: each process holds that one array whole, once on each of its devices,
    until it is written), so no process ever holds the whole model. It returns in every
    process once the file is complete. Without `path`, such an array is an error: the
    dict would be the whole model, in one process.

    **Arguments:**

    - `tree`: the model or params (abstract leaves are not exported: they have no values).
    - `path`: a `.safetensors` file to write (replaced if it exists), or `None` (default)
      for the dict.
    - `convention`: the framework convention of the result: `"torch"` (default),
      `"equinox"`, `"flax"`, `"haiku"`.
    - `rename`: `(regex, replacement)` pairs (or a callable, `None` drops the key) applied
      to each key written with `/` before it is joined, e.g. `[(r"^layers/", "")]`.
    - `layouts`: `{regex: layout}`, as for `tw.load`: the weights whose keys (written with
      `/`, after `rename`) the regex finds are written in that layout (`"io"` for a
      transformers `Conv1D`), or `"as-is"`, unconverted.
    - `into`: the tree's own convention when it cannot be told (a plain dict named like
      linen or Haiku params).

    **Returns:**

    Without `path`, a `dict` of C-contiguous, writable numpy arrays (copies, never views
    of the model): `safetensors.numpy.save_file(out, path)` writes it; for PyTorch,
    `model.load_state_dict({k: torch.from_numpy(v) for k, v in out.items()})` loads it.
    With `path`, `None`.

    **Raises:**

    `tw.ArgumentError`: an unknown `convention`, an abstract leaf, two arrays under one
    key, a dtype safetensors cannot hold (with `path`), or (without `path`) an array
    sharded over devices of other processes. Nothing is written then.

    !!! Example

        ```python
        import os
        import tempfile

        import flax.nnx as nnx
        import treewalk as tw

        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        state_dict = tw.export(model, convention="torch")
        assert {k: v.shape for k, v in state_dict.items()} == {
            "bias": (2,), "weight": (2, 3)
        }
        path = os.path.join(tempfile.mkdtemp(), "linear.safetensors")
        tw.export(model, path, convention="torch")  # tensor by tensor
        back = tw.load(model, path, convention="torch")
        assert (back.kernel[...] == model.kernel[...]).all()
        ```
    """
    keys = _keys(tree, convention, rename, layouts, into)
    if path is None:
        return {
            key: _value(parts, [_here(p.leaf) for p in parts], convention, copy=True)
            for key, parts in keys.items()
        }
    _write(os.fspath(path), keys, convention)
    return None


def _keys(
    tree: PyTree, convention: str, rename: Rename, layouts: Layouts, into: str | None
) -> dict[str, list[_Part]]:
    """The keys `export` writes, each with the parts it is made of (in the order of its
    rows), checked: nothing is read."""
    check_convention(convention, "convention", optional=False)
    check_convention(into, "into")
    framework, leaves = model_leaves(tree, into)
    renamer, layout_of = renamer_of(rename), layouts_of(layouts)
    sep = KEY_SEPARATOR[convention]
    keys: dict[str, list[_Part]] = {}
    for leaf in leaves:
        if leaf.after_load is not None:
            continue  # a BatchNorm's flag or counter: no checkpoint holds it
        if isinstance(leaf.node, jax.ShapeDtypeStruct):
            raise ArgumentError(
                f"tw.export: the array at {leaf.name!r} is abstract ({type(leaf.node).__name__}) "
                "and has no values; load or materialise the model first."
            )
        # A sum of source arrays is written as its first and zeros (two biases of an RNN).
        for j, term in enumerate(leaf.written_as(convention)):
            key = renamer(normalise(term.name) if sep == "." else term.name)
            if key is None:
                continue
            part = _Part(leaf, term.take, term.put, j == 0, layout_of(normalise(key)))
            if sep == ".":
                key = key.replace("/", ".")
            keys.setdefault(key, []).append(part)
    return {key: _bands(key, parts) for key, parts in keys.items()}


def _bands(key: str, parts: list[_Part]) -> list[_Part]:
    """The parts of `key` in the order of the rows they fill: one whole array, or bands
    of rows that tile it (PyTorch's packed `in_proj_weight`)."""
    if len(parts) == 1 and parts[0].take is None:
        return parts
    bands = sorted(parts, key=lambda p: (p.take or (0, 0, 1))[0] / (p.take or (0, 0, 1))[2])
    end = 0.0
    for part in bands:
        a, b, n = part.take or (0, 1, 1)
        if part.take is None or a / n != end:
            names = ", ".join(repr(p.leaf.name) for p in parts)
            raise ArgumentError(
                f"tw.export: {names} do not make up the key {key!r} (two arrays under one "
                "key, or a part missing: an attention layer whose query, key and value "
                "projections do not all have a bias); pass rename= to tell them apart."
            )
        end = b / n
    if end != 1.0:
        raise ArgumentError(
            f"tw.export: the key {key!r} is made of the rows of "
            f"{', '.join(repr(p.leaf.name) for p in parts)}, which do not fill it; give "
            "every projection of the layer the same options (bias or not)."
        )
    return bands


def _value(
    parts: list[_Part], arrays: list[np.ndarray], convention: str, *, copy: bool
) -> np.ndarray:
    """The array of a key from its parts' `arrays` (C-contiguous; a copy with `copy`)."""
    values = []
    for part, array in zip(parts, arrays, strict=True):
        value = _laid_out(part, array, convention)
        if part.override != "as-is" and part.leaf.scale != 1.0:
            value = value / np.asarray(part.leaf.scale, value.dtype)
        values.append(value if part.first else np.zeros_like(value))
    if len(values) > 1 or parts[0].take is not None:
        return np.ascontiguousarray(np.concatenate(values))
    return np.array(values[0], order="C", copy=True) if copy else np.ascontiguousarray(values[0])


def _laid_out(part: _Part, array: np.ndarray, convention: str) -> np.ndarray:
    """The rows `put` of `array` (the array of `part.leaf`) laid out as `convention` lays
    it out, or as `layouts=` says: reshapes, transposes and flips only (views, where
    numpy can make them)."""
    leaf = part.leaf
    if part.override == "as-is":
        return rows(array, part.put)
    if leaf.matrix is not None:
        array = array.reshape(leaf.matrix)
    decided = None
    if leaf.layout is not None and array.ndim >= 2:
        target = (
            LAYOUTS[convention][leaf.family] if part.override is None else Layout(part.override)
        )
        decided = conversion(leaf.layout, target, array.ndim)
    if decided is not None:
        array = orient(array, *decided)
    elif leaf.role in VECTOR_ROLES and leaf.framework != convention and array.ndim > 1:
        if leaf.flat or sum(d != 1 for d in array.shape) <= 1:
            array = array.reshape(-1)
    return rows(array, part.put)


def _meta(parts: list[_Part], convention: str) -> tuple[tuple[int, ...], np.dtype]:
    """`(shape, dtype)` of a key's array, from its parts' shapes alone (laid out as
    zero-stride views: nothing is read or allocated)."""
    shapes = []
    for part in parts:
        node = part.leaf.node
        view = np.broadcast_to(np.zeros((), node.dtype), node.shape)
        shapes.append(_laid_out(part, view, convention).shape)
    if len(shapes) > 1 or parts[0].take is not None:
        return (sum(s[0] for s in shapes), *shapes[0][1:]), np.dtype(parts[0].leaf.node.dtype)
    return shapes[0], np.dtype(parts[0].leaf.node.dtype)


def _spread(x: Any, process: int | None = None) -> bool:
    """Is `x` a global array (over devices of several processes) of which the devices of
    `process` (by default this one) hold only part?"""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return False
    process = jax.process_index() if process is None else process
    shape = x.shape
    parts = {
        index_key(index, shape)
        for device, index in x.sharding.devices_indices_map(shape).items()
        if device.process_index == process
    }
    # The distinct shards of a sharding do not overlap: all of it is their sizes' sum.
    return sum(math.prod(len(range(*a)) for a in part) for part in parts) < x.size


def _here(leaf: Leaf) -> np.ndarray:
    """The array of `leaf` as numpy, from this process alone."""
    if _spread(leaf.node):
        raise ArgumentError(
            f"tw.export: the array at {leaf.name!r} is sharded over devices of other "
            f"processes (this is process {jax.process_index()} of {jax.process_count()}), "
            "and a dict of whole arrays would hold the whole model in one process. Write "
            "the file instead, from every process: tw.export(model, 'model.safetensors', "
            "...) (process 0 writes it, gathering one array at a time)."
        )
    return _on_host(leaf.node)


def _on_host(x: Any) -> np.ndarray:
    """`x`, which this process holds all of, as numpy: its memory where one device holds
    it, else assembled from its shards into a buffer of our own (`np.asarray` would keep
    that copy cached on the model's array: the model's size again)."""
    parts = held(x)
    if len(parts) == 1:
        return on_host(parts[0][1])
    out = staging(x.shape, x.dtype)
    for index, part in parts:
        out[index] = on_host(part)
    return out


def _write(path: str, keys: dict[str, list[_Part]], convention: str) -> None:
    """Write the keys to the safetensors file `path`: process 0 writes; every process
    takes part in gathering each array sharded over several processes' devices, in the
    same order, then waits until the file is complete."""
    metas = {key: _meta(parts, convention) for key, parts in keys.items()}
    for key, (_, dtype) in metas.items():
        if safetensors_dtype(dtype) is None:
            raise ArgumentError(
                f"tw.export: the key {key!r} has dtype {dtype}, which safetensors cannot "
                "hold; cast the model's arrays first, or write the dict yourself."
            )
    order = sorted(keys, key=lambda k: -metas[k][1].itemsize)  # stable: the model's order

    def arrays(parts: list[_Part]) -> list[Any]:  # every process, in the same order
        return [
            multihost_utils.process_allgather(p.leaf.node, tiled=True)
            if _spread(p.leaf.node, 0)
            else p.leaf.node
            for p in parts
        ]

    if jax.process_index() == 0:
        values = (
            _value(keys[k], [_on_host(a) for a in arrays(keys[k])], convention, copy=False)
            for k in order
        )
        write_safetensors(path, [(k, *metas[k]) for k in order], values)
    else:
        for k in order:
            arrays(keys[k])  # this process's part of the gathers
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"tw.export {path}")

"""`tw.export`: a model's arrays as a flat `{key: numpy array}` in a framework's
convention — a PyTorch `state_dict`, ready for `safetensors.numpy.save_file`."""

from __future__ import annotations

import jax
import numpy as np

from .._core.errors import ArgumentError
from .._core.types import PyTree
from .._frameworks.checkpoint import KEY_SEPARATOR, LAYOUTS, VECTOR_ROLES, Layout, conversion
from .._frameworks.composite import Rows
from .leaves import Leaf, check_convention, model_leaves
from .rules import Layouts, Rename, layouts_of, renamer_of
from .sources import normalise
from .step import orient, rows


def export(
    tree: PyTree,
    *,
    convention: str = "torch",
    rename: Rename = None,
    layouts: Layouts = None,
    into: str | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of `tree` as a flat `{key: numpy array}` in the checkpoint convention
    `convention`: the inverse of [`tw.load`][treewalk.load].

    Names and layouts of the known layers are converted as `tw.load` converts them, the
    other way: an NNX or linen `kernel` `(in, out)` becomes a PyTorch `weight`
    `(out, in)`, a `scale` becomes `weight`, a conv bias is a vector. Keys are the
    segments of each array's path, with the last one renamed, joined with `.` for
    `"torch"` and `"equinox"` and with `/` for `"flax"` and `"haiku"`. So
    `tw.load(model, tw.export(model, convention=C), convention=C)` gives `model` back, for
    every framework and every `C`. PRNG keys and NNX RNG state are left out.

    **Arguments:**

    - `tree`: the model or params (abstract leaves are not exported: they have no values).
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

    A `dict` of C-contiguous, writable numpy arrays (copies, never views of the model):
    `safetensors.numpy.save_file(out, path)` writes it; for PyTorch,
    `model.load_state_dict({k: torch.from_numpy(v) for k, v in out.items()})` loads it.

    **Raises:**

    `tw.ArgumentError`: an unknown `convention`, an abstract leaf, or two arrays under one
    key.

    !!! Example

        ```python
        import flax.nnx as nnx
        import treewalk as tw

        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        state_dict = tw.export(model, convention="torch")
        assert {k: v.shape for k, v in state_dict.items()} == {
            "bias": (2,), "weight": (2, 3)
        }
        ```
    """
    check_convention(convention, "convention", optional=False)
    check_convention(into, "into")
    framework, leaves = model_leaves(tree, into)
    renamer, layout_of = renamer_of(rename), layouts_of(layouts)
    sep = KEY_SEPARATOR[convention]
    parts: dict[str, list[tuple[Rows | None, np.ndarray, str]]] = {}
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
            value = rows(_converted(leaf, convention, layout_of(normalise(key))), term.put)
            if sep == ".":
                key = key.replace("/", ".")
            parts.setdefault(key, []).append(
                (term.take, value if j == 0 else np.zeros_like(value), leaf.name)
            )
    return {key: _joined(key, p) for key, p in parts.items()}


def _converted(leaf: Leaf, convention: str, override: str | None) -> np.ndarray:
    """The array of `leaf` laid out as `convention` lays it out, or as `override`
    (`layouts=`) says."""
    array = np.asarray(leaf.node)
    if override == "as-is":
        return array
    if leaf.matrix is not None:
        array = array.reshape(leaf.matrix)
    if leaf.scale != 1.0:
        array = array / np.asarray(leaf.scale, array.dtype)
    decided = None
    if leaf.layout is not None and array.ndim >= 2:
        target = LAYOUTS[convention][leaf.family] if override is None else Layout(override)
        decided = conversion(leaf.layout, target, array.ndim)
    if decided is not None:
        return orient(array, *decided)
    if leaf.role in VECTOR_ROLES and leaf.framework != convention and array.ndim > 1:
        if leaf.flat or sum(d != 1 for d in array.shape) <= 1:
            return array.reshape(-1)
    return array


def _joined(key: str, parts: list[tuple[Rows | None, np.ndarray, str]]) -> np.ndarray:
    """The array of `key` from its parts: one whole array, or bands of rows that tile it
    (PyTorch's packed `in_proj_weight`), as a C-contiguous copy."""
    if len(parts) == 1 and parts[0][0] is None:
        return np.array(parts[0][1], order="C", copy=True)
    bands = sorted(parts, key=lambda p: (p[0] or (0, 0, 1))[0] / (p[0] or (0, 0, 1))[2])
    end = 0.0
    for band, _, _ in bands:
        a, b, n = band or (0, 1, 1)
        if band is None or a / n != end:
            names = ", ".join(repr(p[2]) for p in parts)
            raise ArgumentError(
                f"tw.export: {names} do not make up the key {key!r} (two arrays under one "
                "key, or a part missing: an attention layer whose query, key and value "
                "projections do not all have a bias); pass rename= to tell them apart."
            )
        end = b / n
    if end != 1.0:
        raise ArgumentError(
            f"tw.export: the key {key!r} is made of the rows of "
            f"{', '.join(repr(p[2]) for p in parts)}, which do not fill it; give every "
            "projection of the layer the same options (bias or not)."
        )
    return np.ascontiguousarray(np.concatenate([p[1] for p in bands]))

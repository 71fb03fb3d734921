"""`tw.export`: a model's arrays as a flat `{key: numpy array}` in a framework's
convention — a PyTorch `state_dict`, ready for `safetensors.numpy.save_file`."""

from __future__ import annotations

import jax
import numpy as np

from .._core.errors import ArgumentError
from .._core.types import PyTree
from .._frameworks.checkpoint import KEY_SEPARATOR, LAYOUTS, VECTOR_ROLES, conversion
from .leaves import check_convention, model_leaves
from .plan import Rename, renamer_of
from .sources import normalise


def export(
    tree: PyTree,
    *,
    convention: str = "torch",
    rename: Rename = None,
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
    renamer = renamer_of(rename)
    sep = KEY_SEPARATOR[convention]
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for leaf in leaves:
        if isinstance(leaf.node, jax.ShapeDtypeStruct):
            raise ArgumentError(
                f"tw.export: the array at {leaf.name!r} is abstract ({type(leaf.node).__name__}) "
                "and has no values; load or materialise the model first."
            )
        name = leaf.name_in(convention) or leaf.name
        key = renamer(normalise(name) if sep == "." else name)
        if key is None:
            continue
        if sep == ".":
            key = key.replace("/", ".")
        if key in out:
            raise ArgumentError(
                f"tw.export: {leaf.name!r} and {source[key]!r} both become the key {key!r}; "
                "pass rename= to tell them apart."
            )
        array = np.asarray(leaf.node)
        decided = None
        if leaf.layout is not None and array.ndim >= 2:
            decided = conversion(leaf.layout, LAYOUTS[convention][leaf.family], array.ndim)
        if decided is not None:
            perm, flip = decided
            array = array if perm is None else array.transpose(perm)
            array = np.flip(array, flip) if flip else array
        elif leaf.role in VECTOR_ROLES and leaf.framework != convention and array.ndim > 1:
            if sum(d != 1 for d in array.shape) <= 1:
                array = array.reshape(-1)
        out[key] = np.array(array, order="C", copy=True)
        source[key] = leaf.name
    return out

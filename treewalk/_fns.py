"""Ready-made `fn`s for `replace`: zeros, ones, constant, initializer."""

from __future__ import annotations

import functools
import math
import numbers
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from ._core.errors import ArgumentError, InitError
from ._core.node import Node
from ._core.paths import Path, show_path
from ._core.placement import FEW_ROWS, sharding_of
from ._core.placement import constrain as constrain
from ._core.placement import eager as eager
from ._core.placement import place as _place
from ._core.placement import stack_sharding as stack_sharding


def literal(value: Any) -> str:
    """`repr(value)` as Python that evaluates to `value`: `float('inf')`, `float('nan')`
    (and `complex('(1+infj)')`) where the repr alone (`inf`, `nan`) would not."""
    if type(value) is float and not math.isfinite(value):
        return f"float({repr(value)!r})"
    if type(value) is complex and not (math.isfinite(value.real) and math.isfinite(value.imag)):
        return f"complex({repr(value)!r})"
    return repr(value)


def _shape_dtype(path: Path, node: Any, what: str) -> tuple[tuple[int, ...], Any]:
    shape, dtype = getattr(node, "shape", None), getattr(node, "dtype", None)
    if shape is None or dtype is None:
        raise InitError(
            f"{what} needs an array-like node (with .shape and .dtype) at "
            f"{show_path(path)}, got {type(node).__name__}. Select array leaves only "
            f"(e.g. `sel & tw.arrays`), or for a `None` slot pass a function that builds the "
            f"array: `lambda path, node, key: jnp.zeros((n,))`."
        )
    return tuple(shape), dtype


@functools.lru_cache(maxsize=256)
def _drawer(sharding: Any) -> Callable[..., Any]:
    def draw(fn: ArrayFn, key: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        return fn.draw(key, shape, dtype)

    return jax.jit(draw, static_argnums=(0, 2, 3), out_shardings=sharding)


def _draw_in(fn: ArrayFn, key: Any, shape: tuple[int, ...], dtype: Any, sharding: Any) -> Any:
    """`fn.draw` compiled to write its result directly in `sharding`."""
    return _drawer(sharding)(fn, key, shape, dtype)


class ArrayFn:
    """Base of the helpers: `fn(path, node, key)` that builds an array like `node`.

    Subclasses define `draw(key, shape, dtype)`, which returns a JAX array. A numpy leaf
    gets a numpy array of its own dtype (see `draw_numpy`), a JAX leaf a JAX array.

    `replace` knows three optional methods of a `fn` (all of them here), which any
    user-defined `fn` may implement too:

    - `tw_call(n, key)`: called instead of `fn(n.path, n.node, key)`; `n` is the node's
      `Node` context, with `n.parent` (the enclosing layer), `n.segs`, `n.outer` (the box).
    - `tw_signature(n) -> hashable | None`: nodes with equal signatures may be drawn in one
      batch; `None` means "not batchable".
    - `tw_batched(nodes, keys, signature) -> array[len(nodes), ...]` (or a sequence of
      `len(nodes)` arrays): draw them at once; `keys` is a typed key array (or `None`
      without `key=`). The result must equal calling `fn` node by node with the same keys.
    """

    needs_key = False

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        """The JAX array for one leaf of `shape` and `dtype` (`key` is `None` without
        `key=`; a subclass that needs one sets `needs_key = True`)."""
        raise NotImplementedError

    def draw_numpy(self, key: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """The array for a numpy leaf: drawn by JAX in the nearest dtype JAX has (float32
        for float64 while x64 is off), then converted to the leaf's own `dtype`."""
        return np.asarray(self.draw(key, shape, _jax_dtype(dtype))).astype(dtype)

    def _no_key(self, path: Path) -> ArgumentError:
        return ArgumentError(
            f"{self!r} draws random values and needs a key: pass key=jax.random.key(0) "
            f"to tw.replace (path {show_path(path)})."
        )

    def __call__(self, path: Path, node: Any, key: Any) -> Any:
        if key is None and self.needs_key:
            raise self._no_key(path)
        shape, dtype = _shape_dtype(path, node, repr(self))
        if key is not None and not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        if isinstance(node, np.ndarray | np.generic):
            out = self.draw_numpy(key, shape, dtype)
            return out[()] if isinstance(node, np.generic) else out
        sharding = sharding_of(node)
        if sharding is not None and not isinstance(node, Tracer):
            # Drawn directly in its layout: no device ever holds the whole array.
            return _draw_in(self, key, shape, dtype, sharding)
        return _place(self.draw(key, shape, dtype), node)

    def tw_signature(self, n: Node) -> Any:
        """`(shape, dtype, is numpy)` for arrays (numpy and JAX leaves are never drawn in
        one batch: each gets its own kind of array); `None` for anything else."""
        node = n.node
        if not isinstance(node, _BATCHABLE):
            return None
        return tuple(node.shape), node.dtype, isinstance(node, np.ndarray)

    def tw_batched(self, nodes: Sequence[Any], keys: Any, signature: Any) -> Any:
        """Draw `len(nodes)` leaves of one shape and dtype at once: `[n, *shape]`."""
        shape, dtype, numpy = signature
        if keys is None:
            if self.needs_key:
                raise self._no_key(nodes[0].path)
            keys = jnp.arange(len(nodes))  # stands in for keys, only the count matters
            draw_dtype = _jax_dtype(dtype)
            out = jax.vmap(lambda _: self.draw(None, shape, draw_dtype))(keys)
        else:
            draw_dtype = _jax_dtype(dtype)
            out = jax.vmap(lambda k: self.draw(k, shape, draw_dtype))(keys)
        return np.asarray(out).astype(dtype) if numpy else out


_BATCHABLE = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)


def _jax_dtype(dtype: Any) -> Any:
    """The dtype JAX makes for `dtype` (float64 is float32 while x64 is off)."""
    return jax.dtypes.canonicalize_dtype(dtype)


class Fill(ArrayFn):
    """The `fn`s `tw.zeros`, `tw.ones` and `tw.constant(value)`: an array filled with one
    value, with the node's shape and dtype.

    Exact for every dtype (unlike `x * 0`, which keeps NaN and inf), and many same-shape
    leaves are made in one call. The result is of the node's kind: a JAX array for a JAX
    leaf, a numpy array of the leaf's own dtype for a numpy leaf (`float64` too, whether
    x64 is on or not), a Python number of its own type for a Python number.

    A value the leaf's dtype cannot hold is a `tw.InitError` naming the path, the value
    and the dtype: `tw.constant(0.5)` on an integer leaf, `tw.constant(1e10)` on `int32`,
    `tw.constant(-1)` on `uint8`, `tw.constant(1e5)` on `float16` (it would be `inf`). A
    float value is rounded to a floating dtype's precision (`0.1` in `float32`), as JAX
    and numpy do.

    Two fills of the same number (of the same type) are equal and hash equal, and the
    repr (`tw.zeros`, `tw.constant(0.5)`) evaluates to an equal fill; a fill of an array
    is equal only to itself, and its repr names the array's dtype and shape only.

    !!! Example

        ```python
        import jax.numpy as jnp
        import numpy as np
        import pytest
        import treewalk as tw

        params = {"w": jnp.ones(2), "b": np.ones(2), "step": jnp.zeros((), jnp.int32)}
        out = tw.replace(params, tw.arrays, tw.ones)
        assert out["b"].dtype == np.float64 and isinstance(out["b"], np.ndarray)
        assert repr(tw.zeros) == "tw.zeros"
        with pytest.raises(tw.InitError, match="int32"):
            tw.replace(params, "step", tw.constant(0.5))
        ```
    """

    value: Any
    label: str
    _fits: dict[Any, str | None]

    def __init__(self, value: Any, label: str) -> None:
        self.value, self.label = value, label
        self._fits = {}

    def _key(self) -> Any:
        # A number by its type and exact literal (`0` is not `0.0`, `-0.0` is not `0.0`,
        # `nan` is `nan`); anything else (an array) by identity.
        v = self.value
        if isinstance(v, numbers.Number | np.generic):
            return type(v), literal(v)
        return id(v)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Fill) and type(other) is type(self) and self._key() == other._key()
        )

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def check(self, path: Path, dtype: Any, leaf: str | None = None) -> None:
        """Raise `InitError` if `dtype` cannot hold the value (`leaf`: what the leaf is,
        for the message, default "the leaf's dtype <dtype>")."""
        problem = self._fits.get(dtype, False)
        if problem is False:
            problem = self._fits[dtype] = _misfit(self.value, dtype)
        if problem is not None:
            raise InitError(
                f"{self!r} at {show_path(path)}: {leaf or f'the leaf dtype {dtype}'} cannot "
                f"hold {self.value!r:.40} ({problem}). Pass a value that it holds, or leave "
                f"leaves of this dtype out of the selector."
            )

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return jnp.full(shape, self.value, dtype)

    def draw_numpy(self, key: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.full(shape, self.value, dtype)

    def tw_batched(self, nodes: Sequence[Any], keys: Any, signature: Any) -> Any:
        shape, dtype, numpy = signature
        self.check(nodes[0].path, dtype)
        if numpy:
            return np.full((len(nodes), *shape), self.value, dtype)
        if eager[type(nodes[0].node)] and len(nodes) <= FEW_ROWS:
            # Filled on the host and put on the device leaf by leaf, in one call: no program
            # to compile (a stack and its rows compiled two per group size, ~0.5 s cold).
            host = np.full(shape, self.value, _jax_dtype(dtype))
            return jax.device_put([host] * len(nodes), may_alias=False)
        return jnp.full((len(nodes), *shape), self.value, dtype)

    def __call__(self, path: Path, node: Any, key: Any) -> Any:
        if isinstance(node, bool | int | float | complex) and not isinstance(node, np.generic):
            self.check(path, np.asarray(node).dtype, f"the leaf (a Python {type(node).__name__})")
            return type(node)(self.value)
        dtype = getattr(node, "dtype", None)
        if dtype is not None:
            self.check(path, dtype)
        return super().__call__(path, node, key)

    def __repr__(self) -> str:
        return self.label


def _misfit(value: Any, dtype: Any) -> str | None:
    """Why `dtype` cannot hold `value` exactly (rounding to a float's precision allowed),
    or `None` when it can (or when `value` is traced and cannot be looked at)."""
    if isinstance(value, Tracer):
        return None
    try:
        v = np.asarray(value)
        target = np.dtype(dtype)
    except (TypeError, ValueError):
        return None  # not a dtype numpy knows (a PRNG key): left to jnp.full
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            cast = v.astype(target)
    except (OverflowError, ValueError, TypeError):
        return "out of its range"
    if np.iscomplexobj(v) and not jnp.issubdtype(target, jnp.complexfloating):
        if np.any(np.imag(v) != 0):
            return "it has an imaginary part"
    if jnp.issubdtype(target, jnp.inexact):
        with np.errstate(all="ignore"):
            overflow = np.isfinite(v) & ~np.isfinite(cast)
        return "it would become inf" if np.any(overflow) else None
    if not np.array_equal(cast, v):
        return (
            f"it would become {cast.ravel()[0].item()!r:.40}" if cast.size == 1 else "not exactly"
        )
    return None


zeros: Fill = Fill(0, "tw.zeros")
"""`fn` for `replace`: an array of zeros with the node's shape and dtype.

A numpy leaf gets a numpy array of its own dtype, a Python number `0` of its own type.
Exact for every dtype (unlike `x * 0`, which keeps NaN and inf). Many same-shape leaves
are made in one call.

!!! Example

    ```python
    import jax.numpy as jnp
    import treewalk as tw

    params = {"l1": {"w": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    assert (tw.replace(params, "**/bias", tw.zeros)["l1"]["bias"] == 0).all()
    ```
"""

ones: Fill = Fill(1, "tw.ones")
"""`fn` for `replace`: an array of ones with the node's shape and dtype.

A numpy leaf gets a numpy array of its own dtype, a Python number `1` of its own type.

!!! Example

    ```python
    import jax.numpy as jnp
    import numpy as np
    import treewalk as tw

    out = tw.replace({"scale": jnp.zeros(3), "n": np.zeros(2)}, tw.arrays, tw.ones)
    assert (out["scale"] == 1).all() and out["n"].dtype == np.float64
    ```
"""


def constant(value: Any) -> Fill:
    """`fn` for `replace`: an array filled with `value`, with the node's shape and dtype.

    **Arguments:**

    - `value`: the fill value (a number, or an array that broadcasts to the leaves).

    **Returns:**

    A `fn` for `tw.replace`. A numpy leaf gets a numpy array of its own dtype. A value
    the leaf's dtype cannot hold (`0.5` or `1e10` on `int32`, `-1` on `uint8`, `inf` by
    overflow) is a `tw.InitError` naming the path, the value and the dtype; floats are
    rounded to the dtype's precision.

    !!! Example

        ```python
        import jax.numpy as jnp
        import pytest
        import treewalk as tw

        out = tw.replace({"scale": jnp.zeros(3)}, "scale", tw.constant(0.5))
        assert (out["scale"] == 0.5).all()
        with pytest.raises(tw.InitError, match="int32"):
            tw.replace({"step": jnp.zeros((), jnp.int32)}, "step", tw.constant(0.5))
        ```
    """
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        # An array: not spelled out (it may be large); equal only to itself.
        shape = ",".join(map(str, value.shape))
        return Fill(value, f"tw.constant(<array {value.dtype}[{shape}]>)")
    return Fill(value, f"tw.constant({literal(value)})")


class initializer(ArrayFn):
    """Adapt a `jax.nn.initializers` function `init(key, shape, dtype)` into a `fn`.

    The node's shape and dtype are passed; `replace` needs `key=`. The adapted `init`
    sees only the leaf's own shape, so fans are the leaf's: for layout-aware fans (a
    bias's fan-in taken from its layer's weight) use `tw.init`.

    Works on `jax.ShapeDtypeStruct` leaves too, which is how an abstract model
    (`eqx.filter_eval_shape`, `nnx.eval_shape`) is materialised directly into its init.
    A numpy leaf gets a numpy array of its own dtype: `init` is called with the dtype JAX
    has for it (`float32` for `float64` while x64 is off) and the result converted.

    Two adapters of the same `init` are equal. The repr of one of a module-level function
    is valid Python that evaluates to an equal adapter where the module is imported
    (`tw.initializer(jax.nn.initializers.zeros)`); a closure such as
    `jax.nn.initializers.normal(0.02)` has no such name, and its repr gives its
    qualified name as a string.

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        params = {"dense": {"kernel": jnp.zeros((4, 8)), "bias": jnp.zeros(8)}}
        init = tw.initializer(jax.nn.initializers.lecun_normal())
        params = tw.replace(params, "**/kernel", init, key=jax.random.key(0))
        assert params["dense"]["kernel"].std() > 0
        ```
    """

    needs_key = True
    init: Callable[[Any, tuple[int, ...], Any], Any]

    def __init__(self, init: Callable[[Any, tuple[int, ...], Any], Any]) -> None:
        if not callable(init):
            raise ArgumentError(
                f"tw.initializer takes a function init(key, shape, dtype), e.g. "
                f"jax.nn.initializers.normal(0.02); got {init!r:.60}."
            )
        self.init = init

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return self.init(key, shape, dtype)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, initializer) or type(other) is not type(self):
            return False
        return self.init is other.init or (_hashable(self.init) and self.init == other.init)

    def __hash__(self) -> int:
        return hash((type(self), self.init if _hashable(self.init) else id(self.init)))

    def __repr__(self) -> str:
        return f"tw.initializer({_function_name(self.init)})"


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _function_name(fn: Any) -> str:
    """`module.qualname` where that names `fn` (as for `jax.nn.initializers.zeros`: valid
    Python that evaluates to `fn` once the module is imported); else, for a closure such as
    `jax.nn.initializers.normal(0.02)`, its qualified name as a string."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str):
        return repr(type(fn).__qualname__)
    found: Any = sys.modules.get(module) if isinstance(module, str) else None
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return f"{module}.{qualname}" if found is fn else repr(qualname)

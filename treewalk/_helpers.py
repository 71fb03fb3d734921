"""Ready-made `fn`s for `replace`: zeros, ones, constant, initializer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from ._errors import ArgumentError, InitError
from ._path import Path, show_path


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


def _place(x: jax.Array, node: Any) -> jax.Array:
    """Put `x` where `node` lives when `node` is spread over several devices."""
    sharding = getattr(node, "sharding", None)
    if sharding is None or isinstance(x, Tracer):
        return x
    try:
        if len(sharding.device_set) == 1:
            return x
    except Exception:
        return x
    return jax.device_put(x, sharding)


class ArrayFn:
    """Base of the helpers: `fn(path, node, key)` that builds an array like `node`.

    Subclasses define `draw(key, shape, dtype)`.

    `replace` knows three optional methods of a `fn` (all of them here), which any
    user-defined `fn` may implement too:

    - `tw_call(n, key)`: called instead of `fn(n.path, n.node, key)`; `n` is the node's
      `Node` context, with `n.parent` (the enclosing layer), `n.segs`, `n.outer` (the box).
    - `tw_signature(n) -> hashable | None`: nodes with equal signatures may be drawn in one
      batch; `None` means "not batchable".
    - `tw_batched(nodes, keys, signature) -> array[len(nodes), ...]`: draw them at once;
      `keys` is a typed key array (or `None` without `key=`). The result must equal
      calling `fn` node by node with the same keys.
    """

    needs_key = False
    name = "array fn"

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        raise NotImplementedError

    def __call__(self, path: Path, node: Any, key: Any) -> Any:
        if key is None and self.needs_key:
            raise ArgumentError(
                f"{self!r} draws random values and needs a key: pass key=jax.random.key(0) "
                f"to tw.replace (path {show_path(path)})."
            )
        shape, dtype = _shape_dtype(path, node, repr(self))
        if key is not None and not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        return _place(self.draw(key, shape, dtype), node)

    def tw_batched(self, nodes: Sequence[Any], keys: Any, signature: Any) -> jax.Array:
        """Draw `len(nodes)` leaves of one shape and dtype at once: `[n, *shape]`."""
        shape, dtype = signature[0], signature[1]
        if keys is None:
            if self.needs_key:
                raise ArgumentError(
                    f"{self!r} draws random values and needs a key: pass "
                    f"key=jax.random.key(0) to tw.replace."
                )
            return jax.vmap(lambda _: self.draw(None, shape, dtype))(jnp.arange(len(nodes)))
        return jax.vmap(lambda k: self.draw(k, shape, dtype))(keys)


class _Fill(ArrayFn):
    def __init__(self, value: Any, label: str) -> None:
        self.value, self.label = value, label

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return jnp.full(shape, self.value, dtype)

    def tw_batched(self, nodes: Sequence[Any], keys: Any, signature: Any) -> jax.Array:
        shape, dtype = signature[0], signature[1]
        return jnp.full((len(nodes), *shape), self.value, dtype)

    def __call__(self, path: Path, node: Any, key: Any) -> Any:
        if isinstance(node, bool | int | float | complex) and not isinstance(node, np.generic):
            return type(node)(self.value)
        return super().__call__(path, node, key)

    def __repr__(self) -> str:
        return self.label


zeros = _Fill(0, "tw.zeros")
zeros.__doc__ = """`fn` for `replace`: an array of zeros with the node's shape and dtype.

A Python scalar becomes `0` of its own type. Exact for every dtype (unlike `x * 0`, which
keeps NaN and inf). Many same-shape leaves are made in one call.

!!! Example

    ```python
    import jax.numpy as jnp
    import treewalk as tw

    params = {"l1": {"w": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    assert (tw.replace(params, "**/bias", tw.zeros)["l1"]["bias"] == 0).all()
    ```
"""

ones = _Fill(1, "tw.ones")
ones.__doc__ = """`fn` for `replace`: an array of ones with the node's shape and dtype."""


def constant(value: Any) -> ArrayFn:
    """`fn` for `replace`: an array filled with `value`, with the node's shape and dtype.

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw

        out = tw.replace({"scale": jnp.zeros(3)}, "scale", tw.constant(0.5))
        assert (out["scale"] == 0.5).all()
        ```
    """
    return _Fill(value, f"tw.constant({value!r})")


class initializer(ArrayFn):
    """Adapt a `jax.nn.initializers` function `init(key, shape, dtype)` into a `fn`.

    The node's shape and dtype are passed; `replace` needs `key=`. The adapted `init`
    sees only the leaf's own shape, so fans are the leaf's: for layout-aware fans (a
    bias's fan-in taken from its layer's weight) use `tw.init`.

    Works on `jax.ShapeDtypeStruct` leaves too, which is how an abstract model
    (`eqx.filter_eval_shape`, `nnx.eval_shape`) is materialised directly into its init.

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

    def __init__(self, init: Callable[..., Any]) -> None:
        if not callable(init):
            raise ArgumentError(
                f"tw.initializer takes a function init(key, shape, dtype), e.g. "
                f"jax.nn.initializers.normal(0.02); got {init!r:.60}."
            )
        self.init = init

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return self.init(key, shape, dtype)

    def __repr__(self) -> str:
        return f"tw.initializer({getattr(self.init, '__qualname__', self.init)!r})"

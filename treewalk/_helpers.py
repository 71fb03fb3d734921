"""Ready-made `fn`s for `replace`: zeros, ones, constant, initializer."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.experimental.shard_alike import shard_alike
from jax.sharding import AxisType, NamedSharding, PartitionSpec, SingleDeviceSharding

from ._errors import ArgumentError, InitError
from ._path import Path, show_path


class _EagerTypes(dict[type, bool]):
    def __missing__(self, t: type) -> bool:
        # Concrete JAX arrays subclass `jax.Array`; tracers are `jax.Array`s to isinstance
        # only. Decided per type, without making an array (that would start the backend).
        hit = self[t] = issubclass(t, jax.Array) and not issubclass(t, Tracer)
        return hit


#: `eager[type(x)]`: is `x` a concrete (not traced) JAX array?
eager = _EagerTypes()


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


def sharding_of(node: Any) -> Any:
    """The sharding over several devices that `node` lives in, as far as it is known here.

    A concrete array or a `ShapeDtypeStruct` gives its own `.sharding`; a traced array
    (under `jax.jit`) gives the sharding of its abstract value, whose mesh is abstract and
    whose spec is only known for `Explicit` mesh axes. `None` for anything on one device.
    """
    if eager[type(node)] and type(node.sharding) is SingleDeviceSharding:
        return None  # the common case, decided without the calls below
    if isinstance(node, Tracer):
        try:
            sharding = jax.typeof(node).sharding
        except Exception:
            return None
        mesh = getattr(sharding, "mesh", None)
        return None if mesh is None or mesh.empty or mesh.size == 1 else sharding
    sharding = getattr(node, "sharding", None)
    if sharding is None or isinstance(sharding, SingleDeviceSharding):
        return None
    try:
        return None if len(sharding.device_set) == 1 else sharding
    except Exception:
        return None


def _explicit(sharding: Any) -> bool:
    types = getattr(getattr(sharding, "mesh", None), "axis_types", ())
    return any(t == AxisType.Explicit for t in types)


def constrain(x: Any, sharding: Any) -> Any:
    """Under a trace, lay `x` out in `sharding` (`reshard` on `Explicit` mesh axes)."""
    if _explicit(sharding):
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def _place(x: Any, node: Any) -> Any:
    """Give `x`, the array that replaces `node`, the sharding `node` has.

    Eagerly a result that is elsewhere is moved (`device_put`). Under `jax.jit` the
    layout is constrained instead: to the traced sharding on `Explicit` mesh axes, to the
    node's own sharding when it is concrete, and with `shard_alike` on `Auto` axes (where
    the input's layout is only known to the compiler).
    """
    if eager[type(node)] and type(node.sharding) is SingleDeviceSharding:
        return x  # the common case, decided without the calls below
    sharding = sharding_of(node)
    if sharding is None or getattr(x, "shape", None) != getattr(node, "shape", None):
        return x
    if isinstance(node, Tracer):
        if not isinstance(x, Tracer | jax.Array):
            return x
        if _explicit(sharding):
            return jax.sharding.reshard(x, sharding)
        return shard_alike(x, node)[0]
    if isinstance(x, Tracer):
        return constrain(x, sharding)
    if not isinstance(x, jax.Array) or x.sharding == sharding:
        return x
    return jax.device_put(x, sharding)


def stack_sharding(node: Any, traced: bool) -> tuple[bool, Any]:
    """May `node` be drawn in a stack with others of its shape, and in which layout?

    `(batchable, sharding of the stack [n, *shape] or None)`. A node spread over several
    devices is batchable only under a trace whose sharding is known there (a concrete or
    abstract array's own, or an `Explicit` mesh's): the stack is then laid out with a
    leading replicated axis, so every device draws only its own slices. Eager stacks would
    be drawn whole on one device, and `Auto`-traced inputs hide their layout, so both are
    drawn one by one.
    """
    sharding = sharding_of(node)
    if sharding is None:
        return True, None
    if isinstance(node, Tracer):
        if not _explicit(sharding):
            return False, None
    elif not traced or not isinstance(sharding, NamedSharding):
        return False, None
    spec = tuple(sharding.spec) + (None,) * (len(node.shape) - len(sharding.spec))
    return True, NamedSharding(sharding.mesh, PartitionSpec(None, *spec))


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
        sharding = sharding_of(node)
        if sharding is not None and not isinstance(node, Tracer):
            # Drawn directly in its layout: no device ever holds the whole array.
            return _draw_in(self, key, shape, dtype, sharding)
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

"""The base of `tw.init`: `Initializer`, an `ArrayFn` whose draw may depend on the leaf's
place in the tree, drawn in batches of leaves with equal parameters.

Where the rest lives: `_layout` (weight layouts and fans), `_scaling` (variance
scaling, PyTorch's default), `_presets` (LeCun, He, Glorot), `_simple` (normal, uniform,
truncated normal, orthogonal), `_empirical`, `_stats` and `_probes` (data-driven init).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core.errors import ArgumentError, InitError
from .._core.node import Node
from .._core.paths import Path, show_path
from .._fns import ArrayFn, literal


def _check_leaf(n: Node, name: str) -> tuple[tuple[int, ...], Any]:
    node = n.node
    shape, dtype = getattr(node, "shape", None), getattr(node, "dtype", None)
    if shape is None or dtype is None:
        raise InitError(
            f"{name} needs an array leaf at {show_path(n.path)}, got {type(node).__name__}. "
            f"Select array leaves only (e.g. `sel & tw.arrays`)."
        )
    dtype = np.dtype(dtype) if not hasattr(dtype, "kind") else dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        kind = "complex" if jnp.issubdtype(dtype, jnp.complexfloating) else "non-float"
        raise InitError(
            f"{name} draws real floating-point values, but the leaf at {show_path(n.path)} "
            f"has {kind} dtype {dtype} (shape {tuple(shape)}). Leave it out of the selector "
            f"(e.g. `sel & tw.predicate(lambda p, x: jnp.issubdtype(x.dtype, jnp.floating))`)"
            f" or cast it first."
        )
    return tuple(shape), dtype


class Initializer(ArrayFn):
    """Base of `tw.init`: an `ArrayFn` whose draw may depend on the leaf's place in the tree.

    Subclasses define `params(n) -> hashable` (what the draw needs beyond shape, dtype and
    key; the fans for fan-based initialisers) and `sample(key, shape, dtype, params)`.
    Leaves with equal `(shape, dtype, params)` are drawn in one vectorised call.

    A numpy leaf gets a numpy array of its own dtype: the values are drawn by JAX in the
    dtype JAX has for it (for `float64` while x64 is off, `float32`: float32 precision)
    and converted. With x64 on, a numpy `float64` leaf gets the values a JAX `float64`
    leaf gets with the same key.

    Equality, hashing and the repr are by value, read from `__init__`'s parameters: store
    each argument as the attribute of its name (as every initialiser in `tw.init` does).
    The repr is then a call with the arguments that are not their defaults, and
    evaluates to an equal initialiser. An initialiser with an argument that is not
    hashable (an array), or not stored under its name, is equal only to itself.

    !!! Example

        ```python
        import treewalk as tw

        init = tw.init.orthogonal(2.0, column_axis=-1)
        assert repr(init) == "tw.init.orthogonal(2.0, column_axis=-1)"
        assert eval(repr(init), {"tw": tw}) == init
        assert hash(init) == hash(tw.init.orthogonal(2.0, column_axis=-1))
        ```
    """

    needs_key = True
    _parameters: tuple[inspect.Parameter, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._parameters = parameters(cls.__init__)

    def _arguments(self) -> tuple[Any, ...] | None:
        """The value of each `__init__` argument; `None` when one is not stored under its
        name or is not hashable (then equality is identity)."""
        try:
            arguments = tuple(getattr(self, p.name) for p in self._parameters)
            hash(arguments)
        except (AttributeError, TypeError):
            return None
        return arguments

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Initializer) or type(other) is not type(self):
            return False
        mine = self._arguments()
        return self is other if mine is None else mine == other._arguments()

    def __hash__(self) -> int:
        arguments = self._arguments()
        return id(self) if arguments is None else hash((type(self), arguments))

    def __repr__(self) -> str:
        arguments = self._arguments()
        if arguments is None:
            return object.__repr__(self)
        cls = type(self)
        name = f"tw.init.{cls.__name__}" if cls.__module__.startswith("treewalk.") else None
        return call_repr(name or cls.__qualname__, self._parameters, arguments)

    def params(self, n: Node) -> Any:
        """What the draw at node `n` needs beyond shape, dtype and key (hashable; the
        fans, for fan-based initialisers). The default: `()`."""
        return ()

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        """The JAX array for one leaf, given `params(n)`."""
        raise NotImplementedError

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        """`sample` with no per-leaf parameters."""
        return self.sample(key, shape, dtype, ())

    def prepare(self, n: Node) -> tuple[tuple[int, ...], Any, Any]:
        """`(shape, dtype, params)`; `params` is `None` for an empty leaf (nothing to draw)."""
        shape, dtype = _check_leaf(n, repr(self))
        if math.prod(shape) == 0 and shape:
            return shape, dtype, None
        return shape, dtype, self.params(n)

    def tw_signature(self, n: Node) -> Any:
        """`(shape, dtype, params, is numpy)`: leaves with equal ones are drawn in one batch."""
        return (*self.prepare(n), isinstance(n.node, np.ndarray))

    def tw_call(self, n: Node, key: Any) -> Any:
        """The new leaf at node `n` (what `replace` calls instead of `fn(path, node, key)`)."""
        shape, dtype, params = self.prepare(n)
        if params is None:
            return _zeros(shape, dtype, isinstance(n.node, np.ndarray | np.generic))
        return _Bound(self, params)(n.path, n.node, key)

    def __call__(self, path: Path, node: Any, key: Any) -> Any:
        return self.tw_call(Node(path, node, None, None), key)

    def tw_batched(self, nodes: Sequence[Any], keys: Any, signature: Any) -> Any:
        """Draw `len(nodes)` leaves of one `tw_signature` at once: `[n, *shape]`."""
        shape, dtype, params, numpy = signature
        if params is None:
            return _zeros((len(nodes), *shape), dtype, numpy)
        if keys is None:
            raise self._no_key(nodes[0].path)
        jax_dtype = jax.dtypes.canonicalize_dtype(dtype)
        out = jax.vmap(lambda k: self.sample(k, shape, jax_dtype, params))(keys)
        return np.asarray(out).astype(dtype) if numpy else out


def _zeros(shape: tuple[int, ...], dtype: Any, numpy: bool) -> Any:
    return np.zeros(shape, dtype) if numpy else jnp.zeros(shape, dtype)


@dataclasses.dataclass(frozen=True, eq=True)
class _Bound(ArrayFn):
    """An initialiser with its per-leaf parameters fixed: a plain `ArrayFn` (hashable, so
    sharded draws compile once per distinct parameters)."""

    init: Initializer
    params: Any
    needs_key = True

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return self.init.sample(key, shape, dtype, self.params)

    def __repr__(self) -> str:
        return repr(self.init)


def parameters(fn: Callable[..., Any]) -> tuple[inspect.Parameter, ...]:
    """The named parameters of `fn` (an `__init__`: without `self`), for `call_repr`."""
    named = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ps = [p for p in inspect.signature(fn).parameters.values() if p.kind not in named]
    return tuple(ps[1:] if ps and ps[0].name == "self" else ps)


def call_repr(name: str, params: Sequence[inspect.Parameter], values: Sequence[Any]) -> str:
    """`name(...)`, valid Python that makes the same call: positional arguments in order up
    to the last that is not its default, keyword-only ones by name where not their default."""

    def given(p: inspect.Parameter, v: Any) -> bool:
        d = p.default
        return d is inspect.Parameter.empty or type(v) is not type(d) or literal(v) != literal(d)

    pairs = list(zip(params, values, strict=True))
    keyword = inspect.Parameter.KEYWORD_ONLY
    positional = [(p, v) for p, v in pairs if p.kind is not keyword]
    while positional and not given(*positional[-1]):
        positional.pop()
    parts = [literal(v) for _, v in positional]
    parts += [f"{p.name}={literal(v)}" for p, v in pairs if p.kind is keyword and given(p, v)]
    return f"{name}({', '.join(parts)})"


def real(name: str, value: Any) -> float:
    """`value` as a Python float, or an `ArgumentError` naming the argument."""
    try:
        return float(value)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        raise ArgumentError(
            f"{name} must be a number; got {value!r:.60}. An initialiser is a static "
            f"(hashable) value: for a traced {name}, multiply its output instead."
        ) from None


def integer(name: str, value: Any, *, positive: bool = True) -> int | None:
    """`value` as a Python int (`None` stays `None`), or an `ArgumentError` naming it."""
    if value is None:
        return None
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if n is None or (positive and n <= 0):
        what = "a positive integer" if positive else "an integer"
        raise ArgumentError(f"{name} must be {what} or None; got {value!r:.60}.")
    return n

"""The laws about JAX's transformations: a tree transform under `jax.jit`, and under
`jax.vmap` over a batch of two trees, gives what it gives eagerly.

The tree's arrays go in as the traced arguments (an array at several paths as one, so
that a tie stays one); its other leaves (functions, strings, static nodes) are closed
over, as `equinox.filter_jit` does; the output's arrays come out, and its other leaves
are taken from the trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import settings as Settings
from hypothesis import strategies as st
from jax.core import Tracer

from .._frameworks import unboxed
from ._compare import ARRAYS, first_difference, is_key, map_once
from ._run import Transform, call, check_callable, keyed, run_law
from ._values import ATOL, RTOL
from ._zoo import traceable_default


class _Traced:
    """`transform` as a function of a tree's arrays (and the key), for `jit`/`vmap`."""

    def __init__(self, transform: Callable[..., Any], tree: Any, batched_keys: bool) -> None:
        self.transform = transform
        self.leaves, self.treedef = jax.tree_util.tree_flatten(tree)
        #: The leaf index of each argument, and each traced leaf's argument: an array
        #: at several paths (a tie) is one argument, so the transform sees one tracer.
        self.first: list[int] = []
        self.slot: dict[int, int] = {}
        seen: dict[int, int] = {}
        for i, x in enumerate(self.leaves):
            if isinstance(x, ARRAYS) and (batched_keys or not is_key(x)):
                if id(x) not in seen:
                    seen[id(x)] = len(self.first)
                    self.first.append(i)
                self.slot[i] = seen[id(x)]
        self.out: tuple[list[Any], Any, list[int]] | None = None

    def arrays(self, tree: Any) -> list[Any]:
        """The arguments: `tree`'s arrays where the drawn tree has its distinct ones."""
        leaves = jax.tree_util.tree_leaves(tree)
        return [leaves[i] for i in self.first]

    def __call__(self, arrays: list[Any], key: Any, what: str) -> list[Any]:
        leaves = list(self.leaves)
        for i, slot in self.slot.items():
            leaves[i] = arrays[slot]
        out = call(self.transform, self.treedef.unflatten(leaves), 0, key=key, what=what)
        out_leaves, out_def = jax.tree_util.tree_flatten(out)
        dynamic = [i for i, y in enumerate(out_leaves) if isinstance(y, jax.Array)]
        for y in out_leaves:
            inner = unboxed(y)
            assert not isinstance(inner, Tracer) or inner is y, (
                f"{what} returned a traced value inside a {type(y).__name__}, a leaf "
                f"JAX does not look into (unbind it first: penzai's `unbind_params`)"
            )
        self.out = (out_leaves, out_def, dynamic)
        return [out_leaves[i] for i in dynamic]

    def rebuild(self, arrays: list[Any]) -> Any:
        assert self.out is not None
        leaves, treedef, dynamic = self.out
        leaves = list(leaves)
        for i, a in zip(dynamic, arrays, strict=True):
            leaves[i] = a
        return treedef.unflatten(leaves)


def _key(transform: Any, seed: int) -> Any:
    return jax.random.key(seed) if keyed(transform) else None


#: Each example compiles a program of its own (every tree is a new structure): unless a
#: count or settings are given, at most this many examples.
MAX_EXAMPLES = 20


def _count(max_examples: int | None, settings: Settings | None) -> int | None:
    if max_examples is None and settings is None:
        return min(Settings().max_examples, MAX_EXAMPLES)
    return max_examples


def check_commutes_with_jit(
    transform: Transform,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check that `transform` gives the same tree under `jax.jit` as eagerly (within
    `rtol`/`atol`). The tree's arrays are the jitted function's arguments, its other
    leaves closed over (as `equinox.filter_jit` has them). A transform that reads an
    array's values in Python (`float(x.std())`, `np.asarray(x)`, an `if` on a value)
    fails, as does one whose result depends on tracing (a global RNG drawn at trace
    time).

    Arguments and settings as
    [`check_matches_reference`][treewalk.testing.check_matches_reference] (default
    trees: [`pytrees(penzai=False)`][treewalk.testing.pytrees]: penzai's `Parameter`s
    are leaves JAX cannot trace through), but for one: each example compiles a program
    of its own, so with neither `max_examples` nor `settings` given, the check tries 20
    trees at most (the active profile's count where it is lower).

    !!! Example

        ```python
        import numpy as np
        import pytest
        import treewalk as tw
        from treewalk.testing import check_commutes_with_jit, params_trees

        def halve(tree):
            return tw.replace(tree, tw.params, lambda p, x, k: x / 2, strict=False)

        check_commutes_with_jit(halve, max_examples=10)

        def orthogonalise(tree):  # numpy needs concrete values
            def fn(path, x, key):
                return np.linalg.qr(np.asarray(x))[0] if x.ndim == 2 else x
            return tw.replace(tree, tw.params, fn, check=False, strict=False)

        with pytest.raises(AssertionError, match="under jax.jit"):
            check_commutes_with_jit(orthogonalise, trees=params_trees())
        ```
    """
    check_callable("check_commutes_with_jit", transform)

    def prop(tree: Any, seed: int) -> None:
        key = _key(transform, seed)
        eager = call(transform, tree, seed, key=key)
        f = _Traced(transform, tree, batched_keys=True)
        what = "the transform under jax.jit"
        got = jax.jit(lambda arrays, k: f(arrays, k, what))(f.arrays(tree), key)
        why = first_difference(eager, f.rebuild(got), rtol, atol)
        assert why is None, f"under jax.jit, the transform gives another tree: {why}"

    count = _count(max_examples, settings)
    run_law("check_commutes_with_jit", prop, trees, traceable_default, transform, count, settings)


def _other(x: Any) -> Any:
    """An array of `x`'s shape and dtype with other values: a second batch member."""
    if not isinstance(x, ARRAYS) or is_key(x):
        return x
    xp = np if isinstance(x, np.ndarray) else jnp
    if x.dtype == bool:
        return xp.logical_not(x)
    if xp.issubdtype(x.dtype, xp.integer):
        return x + 1
    return x * -1.5 + 0.25


def check_commutes_with_vmap(
    transform: Transform,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check that `jax.vmap` of `transform` over a batch of two trees (the drawn one and
    one like it with other values) gives, for each, what `transform` gives it eagerly
    (within `rtol`/`atol`; the key, for a `transform(tree, key)`, is shared, not
    batched). A transform that reads values in Python, or mixes up axes when arrays
    gain a batch axis, fails.

    Arguments and settings as
    [`check_commutes_with_jit`][treewalk.testing.check_commutes_with_jit].

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw
        from treewalk.testing import check_commutes_with_vmap

        def normalise(tree):
            def fn(path, x, key):
                return x / (jnp.linalg.norm(x) + 1).astype(x.dtype)
            floats = tw.arrays & tw.predicate(
                lambda p, x: jnp.issubdtype(x.dtype, jnp.floating)
            )
            return tw.replace(tree, floats, fn, strict=False)

        check_commutes_with_vmap(normalise, max_examples=10)
        ```
    """
    check_callable("check_commutes_with_vmap", transform)

    def prop(tree: Any, seed: int) -> None:
        key = _key(transform, seed)
        other = map_once(_other, tree)  # its ties kept
        eager = [call(transform, t, seed, key=key) for t in (tree, other)]
        f = _Traced(transform, tree, batched_keys=False)
        batch = [jnp.stack([a, b]) for a, b in zip(f.arrays(tree), f.arrays(other), strict=True)]
        what = "the transform under jax.vmap"
        vmapped = jax.vmap(lambda arrays, k: f(arrays, k, what), in_axes=(0, None), axis_size=2)
        got = vmapped(batch, key)
        for i, (name, expected) in enumerate(zip(("drawn", "second"), eager, strict=True)):
            why = first_difference(expected, f.rebuild([a[i] for a in got]), rtol, atol)
            assert why is None, (
                f"under jax.vmap, the transform gives another tree for the batch's {name} "
                f"tree than it gives that tree eagerly: {why}"
            )

    count = _count(max_examples, settings)
    run_law("check_commutes_with_vmap", prop, trees, traceable_default, transform, count, settings)

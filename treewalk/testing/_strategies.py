"""Hypothesis strategies: leaves, pytrees, paths of a tree, selectors."""

from __future__ import annotations

import string
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from .._core.paths import path_segments
from .._ops.query import paths
from .._select.algebra import Selector, glob, of_type, predicate
from .._select.atoms import arrays, everything, inside, name
from ._kinds import linen_kinds, nnx_kinds, penzai_kinds
from ._nodes import Keyed, Pair, Static, Unkeyed, eqx_node

_DTYPES = (jnp.float32, jnp.int32, jnp.bool_, jnp.float16)
_KEYS = st.sampled_from(["a", "b", "w", "bias", "kernel", "layer_0", "layer_1", "mlp/~/linear_0"])


@st.composite
def leaves(draw: st.DrawFn, *, non_arrays: bool = True) -> Any:
    """An array leaf of a random small shape and dtype, or (optionally) a non-array leaf."""
    options = ["array"] + (["scalar", "function", "string"] if non_arrays else [])
    kind = draw(st.sampled_from(options))
    if kind == "array":
        shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=2).map(tuple))
        dtype = draw(st.sampled_from(_DTYPES))
        seed = draw(st.integers(0, 2**16))
        values = np.random.default_rng(seed).normal(size=shape) * 3
        return jnp.asarray(values).astype(dtype)
    if kind == "scalar":
        return draw(st.one_of(st.integers(-5, 5), st.floats(-2, 2, allow_nan=False)))
    if kind == "function":
        return draw(st.sampled_from([jax.nn.relu, jnp.tanh]))
    return draw(st.text(string.ascii_lowercase, min_size=1, max_size=3))


def pytrees(
    *,
    max_leaves: int = 12,
    non_arrays: bool = True,
    none: bool = True,
    custom: bool = True,
    equinox: bool = True,
    nnx: bool = True,
    linen: bool = True,
    penzai: bool = True,
    static: bool = True,
    ties: bool = True,
) -> st.SearchStrategy[Any]:
    """A strategy for pytrees: the kinds of trees treewalk's calls must agree on.

    Every kind below is drawn unless its argument is `False`; a framework's kinds only
    when the framework is installed (it is imported when `pytrees()` is called, not when
    `treewalk.testing` is imported).

    - Containers: dicts (keys such as `"bias"`, `"kernel"`, Haiku's `"mlp/~/linear_0"`),
      lists, tuples.
    - Leaves: arrays of small shapes (empty ones included) and dtypes `float32`, `int32`,
      `bool`, `float16`; non-array leaves (ints, floats, functions, strings); `None`.
    - Custom nodes: `Pair` (a namedtuple), `Keyed` (registered with keys), `Unkeyed`
      (without keys), and `Static` nodes (`jax.tree_util.register_static`: no children).
    - Equinox modules with a static field.
    - Flax NNX: modules (`NnxNode`) holding `Variable`s, other modules or any subtree;
      `nnx.Param`/`nnx.BatchStat` variables on their own; `nnx.State` of a module.
    - Flax linen `Partitioned` boxes (`nn.Partitioned(x, names=...)`).
    - penzai `Parameter`s (`pz.Parameter(value=x, label=...)`), mutable leaves.
    - Ties: one subtree (its arrays included) reached by two paths (`[t, t]`), and one
      NNX `Variable` shared by two modules.

    **Arguments:**

    - `max_leaves`: a bound on the tree's size.
    - `non_arrays`: include non-array leaves (ints, floats, functions, strings).
    - `none`: include `None` children (absent optional arrays).
    - `custom`: include `Pair` (namedtuple), `Keyed` and `Unkeyed` custom nodes.
    - `equinox`: include Equinox modules with a static field.
    - `nnx`: include NNX modules, `Variable`s, `State` and shared `Variable`s.
    - `linen`: include linen `Partitioned` boxes.
    - `penzai`: include penzai `Parameter`s.
    - `static`: include `Static` nodes.
    - `ties`: include subtrees reached by two paths (and, with `nnx`, shared `Variable`s).

    **Returns:**

    A hypothesis strategy.

    !!! Example

        ```python
        from hypothesis import given, settings
        import treewalk as tw
        from treewalk.testing import pytrees, trees_equal

        @settings(max_examples=20, deadline=None)
        @given(pytrees())
        def test_zeroing_is_idempotent(tree):
            once = tw.replace(tree, tw.arrays, tw.zeros, strict=False)
            assert trees_equal(once, tw.replace(once, tw.arrays, tw.zeros, strict=False))

        test_zeroing_is_idempotent()
        ```
    """
    arrays_only = leaves(non_arrays=False)
    base = leaves(non_arrays=non_arrays)
    extra_leaves: list[st.SearchStrategy[Any]] = []
    if none:
        extra_leaves.append(st.none())
    if static:
        extra_leaves.append(st.sampled_from(["s", "t"]).map(Static))
    if linen:
        extra_leaves += linen_kinds(arrays_only)
    if penzai:
        extra_leaves += penzai_kinds(arrays_only)
    if extra_leaves:  # three in four leaves stay plain ones
        base = st.one_of(base, base, base, st.one_of(extra_leaves))

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        options = [
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(_KEYS, children, max_size=3),
        ]
        if custom:
            options += [
                st.builds(Pair, children, children),
                st.builds(Keyed, children, children),
                st.lists(children, max_size=3).map(lambda xs: Unkeyed(*xs)),
            ]
        eqx_cls = eqx_node() if equinox else None
        if eqx_cls is not None:
            options.append(st.builds(eqx_cls, children, children, st.sampled_from(["x", "y"])))
        if nnx:
            options += nnx_kinds(children, arrays_only, ties)
        if ties:
            options.append(children.map(lambda t: [t, t]))
        return st.one_of(options)

    return st.recursive(base, extend, max_leaves=max_leaves)


def paths_of(tree: Any, *, include_none: bool = True) -> st.SearchStrategy[Any]:
    """A strategy for the key path of one node of `tree` (the root included)."""
    return st.sampled_from(paths(tree, everything, include_none=include_none))


def _segment_patterns(tree: Any) -> list[str]:
    segs = {str(s) for p in paths(tree, everything) for s in path_segments(p)}
    return sorted(s for s in segs if "/" not in s and s and not any(c in s for c in "*?[]"))


def selectors(tree: Any = None, *, max_depth: int = 3) -> st.SearchStrategy[Selector]:
    """A strategy for selectors, composed with `&`, `|`, `~`, `inside`.

    With a `tree`, names and globs are built from that tree's own segments, so they
    actually match something.
    """
    words = (_segment_patterns(tree) if tree is not None else []) or ["a", "b", "bias", "w"]
    word = st.sampled_from(words)
    piece = st.one_of(word, st.just("*"), st.just("**"), word.map(lambda w: w[:1] + "*"))
    globs = st.lists(piece, min_size=1, max_size=4).map(lambda ps: glob("/".join(ps)))
    atoms = st.one_of(
        globs,
        st.lists(word, min_size=1, max_size=2).map(lambda ws: name(*ws)),
        st.just(arrays),
        st.sampled_from([of_type(dict), of_type(list), of_type(tuple), of_type(jax.Array)]),
        st.just(predicate(_is_2d)),
    )

    def extend(inner: st.SearchStrategy[Selector]) -> st.SearchStrategy[Selector]:
        return st.one_of(
            st.tuples(inner, inner).map(lambda ab: ab[0] & ab[1]),
            st.tuples(inner, inner).map(lambda ab: ab[0] | ab[1]),
            inner.map(lambda a: ~a),
            inner.map(inside),
        )

    return st.recursive(atoms, extend, max_leaves=2**max_depth)


def _is_2d(path: Any, node: Any) -> bool:
    return getattr(node, "ndim", None) == 2

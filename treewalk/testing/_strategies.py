"""Hypothesis strategies: leaves, pytrees, paths of a tree, selectors."""

from __future__ import annotations

import string
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from .._path import path_segments
from .._query import paths
from .._selectors import Selector, arrays, everything, glob, inside, name, of_type, predicate
from ._nodes import Keyed, Pair, Unkeyed, eqx_node

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
) -> st.SearchStrategy[Any]:
    """A strategy for pytrees.

    **Arguments:**

    - `max_leaves`: a bound on the tree's size.
    - `non_arrays`: include non-array leaves (ints, floats, functions, strings).
    - `none`: include `None` children (absent optional arrays).
    - `custom`: include `Pair` (namedtuple), `Keyed` and `Unkeyed` custom nodes.
    - `equinox`: include Equinox modules with a static field (if Equinox is installed).
    """
    base = leaves(non_arrays=non_arrays)
    if none:
        base = st.one_of(base, st.none())

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

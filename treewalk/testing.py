"""Hypothesis strategies (and law checks) for property-testing pytree transforms.

Install with `pip install "treewalk[testing]"` (needs `hypothesis`). The strategies build
the kinds of trees real code meets: nested dicts, lists, tuples, namedtuples, `None`,
custom nodes registered with and without keys, Equinox modules (when Equinox is installed)
with static fields, array leaves of mixed shapes and dtypes, and non-array leaves.

!!! Example

    ```python
    from hypothesis import given
    import treewalk as tw
    from treewalk.testing import pytrees

    @given(pytrees())
    def test_identity(tree):
        out = tw.prewalk(lambda path, node: node, tree)
        assert tw.paths(out, tw.arrays) == tw.paths(tree, tw.arrays)

    test_identity()
    ```
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ._path import path_segments, show_path
from ._query import paths
from ._selectors import Selector, arrays, everything, glob, inside, name, of_type, predicate

__all__ = [
    "Keyed",
    "Pair",
    "Unkeyed",
    "check_key_deterministic",
    "check_laws",
    "check_pure",
    "check_structure_preserving",
    "leaves",
    "paths_of",
    "pytrees",
    "selectors",
    "trees_equal",
]


class Pair(NamedTuple):
    """A namedtuple node (JAX names its children `.first`, `.second`)."""

    first: Any
    second: Any


@jax.tree_util.register_pytree_with_keys_class
class Keyed:
    """A custom node registered *with* keys: children `left`/`right` under `GetAttrKey`s."""

    def __init__(self, left: Any, right: Any) -> None:
        self.left, self.right = left, right

    def tree_flatten_with_keys(self) -> tuple[Any, None]:
        GetAttrKey = jax.tree_util.GetAttrKey
        return ((GetAttrKey("left"), self.left), (GetAttrKey("right"), self.right)), None

    def tree_flatten(self) -> tuple[tuple[Any, Any], None]:
        return (self.left, self.right), None

    @classmethod
    def tree_unflatten(cls, aux: None, children: Any) -> Keyed:
        return cls(*children)

    def __eq__(self, other: object) -> bool:
        return type(other) is Keyed and _eq(self.left, other.left) and _eq(self.right, other.right)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Keyed({self.left!r}, {self.right!r})"


@jax.tree_util.register_pytree_node_class
class Unkeyed:
    """A custom node registered *without* keys: children get `FlattenedIndexKey`s."""

    def __init__(self, *items: Any) -> None:
        self.items = tuple(items)

    def tree_flatten(self) -> tuple[tuple[Any, ...], None]:
        return self.items, None

    @classmethod
    def tree_unflatten(cls, aux: None, children: Any) -> Unkeyed:
        return cls(*children)

    def __eq__(self, other: object) -> bool:
        return type(other) is Unkeyed and _eq(self.items, other.items)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Unkeyed{self.items!r}"


def _eq(a: Any, b: Any) -> bool:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, jax.Array | np.ndarray) or isinstance(y, jax.Array | np.ndarray):
            if not (np.shape(x) == np.shape(y) and np.array_equal(x, y, equal_nan=True)):
                return False
        elif x is not y and x != y:
            return False
    return True


try:  # Equinox modules, when Equinox is installed.
    import equinox as eqx

    class EqxNode(eqx.Module):
        """An Equinox module with two children and a static field."""

        a: Any
        b: Any
        tag: str = eqx.field(static=True, default="node")

    _EQX: type | None = EqxNode
except ImportError:  # pragma: no cover
    _EQX = None


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
        if equinox and _EQX is not None:
            options.append(st.builds(_EQX, children, children, st.sampled_from(["x", "y"])))
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


def trees_equal(a: Any, b: Any) -> bool:
    """Same structure, and equal leaves (arrays compared by value, NaN equal to NaN)."""
    return _eq(a, b)


# ----------------------------------------------------------------------------------------
# Law checks: properties a user can assert of their own tree transform.


def _keyed(transform: Callable[..., Any]) -> bool:
    """Does `transform` take `(tree, key)` rather than `(tree)`?"""
    try:
        sig = inspect.signature(transform)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    return len(positional) >= 2 or (len(positional) == 1 and varargs)


def _apply(transform: Callable[..., Any], tree: Any, seed: int) -> Any:
    if _keyed(transform):
        return transform(tree, jax.random.key(seed))
    return transform(tree)


def _run(
    prop: Callable[..., None],
    trees: st.SearchStrategy[Any] | None,
    max_examples: int | None,
) -> None:
    strategy = pytrees() if trees is None else trees
    test = given(strategy, st.integers(0, 2**31 - 1))(prop)
    if max_examples is not None:
        test = settings(max_examples=max_examples)(test)
    test()


def _leaves(tree: Any) -> list[tuple[Any, Any]]:
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _where(path: Any) -> str:
    return show_path(path)


def _snapshot(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.copy()
    return x


def check_structure_preserving(
    transform: Callable[..., Any],
    *,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
) -> None:
    """Check that `transform` returns a tree of the input's structure: the same treedef,
    and every array leaf with its shape and dtype.

    Runs a hypothesis test over `trees` (default [`pytrees()`][treewalk.testing.pytrees]).
    `transform(tree)` or, if it takes two arguments, `transform(tree, key)`.

    **Arguments:**

    - `transform`: the function under test.
    - `trees`: a strategy for the input trees.
    - `max_examples`: overrides the active hypothesis profile's.

    **Raises:**

    `AssertionError` naming the first path where the output differs (hypothesis shrinks
    it to a small failing tree first).

    !!! Example

        ```python
        import treewalk as tw
        from treewalk.testing import check_structure_preserving

        check_structure_preserving(lambda t: tw.replace(t, tw.arrays, tw.zeros, strict=False))
        ```
    """

    def prop(tree: Any, seed: int) -> None:
        out = _apply(transform, tree, seed)
        before, after = jax.tree.structure(tree), jax.tree.structure(out)
        assert before == after, f"the tree structure changed: {before} -> {after}"
        for (path, x), (_, y) in zip(_leaves(tree), _leaves(out), strict=True):
            if isinstance(x, _ARRAYS):
                shape, dtype = getattr(y, "shape", None), getattr(y, "dtype", None)
                assert shape is not None and dtype is not None, (
                    f"the array at {_where(path)} became a {type(y).__name__}"
                )
                assert (tuple(shape), dtype) == (tuple(x.shape), x.dtype), (
                    f"the array at {_where(path)} changed from {tuple(x.shape)} {x.dtype} "
                    f"to {tuple(shape)} {dtype}"
                )

    _run(prop, trees, max_examples)


def check_pure(
    transform: Callable[..., Any],
    *,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
) -> None:
    """Check that `transform` leaves its input untouched: after the call the input has
    the same structure, the same leaf objects, and (for numpy arrays, which can be
    written in place) the same values. An NNX module whose variables were reassigned
    fails this too.

    Arguments as [`check_structure_preserving`][treewalk.testing.check_structure_preserving].

    !!! Example

        ```python
        import treewalk as tw
        from treewalk.testing import check_pure

        check_pure(lambda t: tw.replace(t, tw.arrays, tw.ones, strict=False))
        ```
    """

    def prop(tree: Any, seed: int) -> None:
        treedef = jax.tree.structure(tree)
        leaves = _leaves(tree)
        saved = [_snapshot(x) for _, x in leaves]
        _apply(transform, tree, seed)
        assert jax.tree.structure(tree) == treedef, "the input's structure was changed"
        for (path, x), (_, now), old in zip(leaves, _leaves(tree), saved, strict=True):
            assert now is x, f"the leaf at {_where(path)} of the input was replaced"
            if isinstance(old, np.ndarray):
                assert np.array_equal(old, now, equal_nan=True), (
                    f"the numpy array at {_where(path)} of the input was written in place"
                )

    _run(prop, trees, max_examples)


def check_key_deterministic(
    transform: Callable[[Any, Any], Any],
    *,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
) -> None:
    """Check that `transform(tree, key)` is a function of its arguments: two calls with
    the same key give equal trees (arrays compared by value), on a fresh copy of the
    input each time.

    Arguments as [`check_structure_preserving`][treewalk.testing.check_structure_preserving].

    !!! Example

        ```python
        import jax
        import treewalk as tw
        from treewalk.testing import check_key_deterministic

        def noise(tree, key):
            draw = lambda p, x, k: jax.random.normal(k, x.shape).astype(x.dtype)
            return tw.replace(tree, tw.arrays, draw, key=key, strict=False)

        check_key_deterministic(noise)
        ```
    """
    if not _keyed(transform):
        raise TypeError(
            f"check_key_deterministic needs a transform(tree, key); "
            f"{getattr(transform, '__qualname__', transform)!r} takes one argument. "
            f"Use check_pure for transforms without a key."
        )

    def prop(tree: Any, seed: int) -> None:
        first = transform(tree, jax.random.key(seed))
        again = transform(jax.tree.map(_snapshot, tree), jax.random.key(seed))
        if not trees_equal(first, again):
            for (path, x), (_, y) in zip(_leaves(first), _leaves(again), strict=False):
                assert _eq(x, y), f"two calls with the same key differ at {_where(path)}"
            raise AssertionError("two calls with the same key give different trees")

    _run(prop, trees, max_examples)


def check_laws(
    transform: Callable[..., Any],
    *,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
) -> None:
    """All the checks that apply: structure preserved, input untouched, and, for a
    `transform(tree, key)`, the same key giving the same tree.

    !!! Example

        ```python
        import treewalk as tw
        from treewalk.testing import check_laws

        check_laws(lambda t: tw.replace(t, tw.arrays, tw.zeros, strict=False), max_examples=10)
        ```
    """
    check_structure_preserving(transform, trees=trees, max_examples=max_examples)
    check_pure(transform, trees=trees, max_examples=max_examples)
    if _keyed(transform):
        check_key_deterministic(transform, trees=trees, max_examples=max_examples)


_ARRAYS = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)

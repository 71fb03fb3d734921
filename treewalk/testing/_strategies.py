"""Hypothesis strategies: leaves, pytrees, paths of a tree, selectors."""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from .._core.paths import path_segments
from .._ops.query import paths
from .._select.algebra import Selector, glob, of_type, predicate
from .._select.atoms import arrays, everything, inside, name
from ._kinds import linen_partitioned, nnx_node, nnx_state, nnx_variables, penzai_parameter
from ._nodes import Keyed, Pair, Static, Unkeyed, eqx_node

T = TypeVar("T")

_KEYS = ["w", "b", "kernel", "bias", "scale", "a", "layer_0", "layer_1", "mlp/~/linear_0"]


def pick(draw: st.DrawFn, table: Sequence[tuple[int, T]]) -> T:
    """A value of `table` (`(weight, value)` pairs), drawn by weight; hypothesis shrinks
    the draw towards the first."""
    i = draw(st.integers(0, sum(w for w, _ in table) - 1))
    for w, value in table:
        if i < w:
            return value
        i -= w
    raise AssertionError("unreachable")  # pragma: no cover


_NDIMS = [(45, 1), (35, 2), (15, 0), (5, 3)]
_DIMS = [(40, 2), (35, 3), (20, 1), (5, 0)]
_DTYPES = [(52, "float32"), (14, "int32"), (10, "bool"), (12, "float16"), (12, "bfloat16")]


def array(
    draw: st.DrawFn,
    *,
    dtype: Any = None,
    shape: tuple[int, ...] | None = None,
    numpy: bool = False,
) -> Any:
    """One array: a small shape (one dimension in twenty empty), a dtype of `_DTYPES`,
    values from a drawn seed; with `numpy`, a numpy array one time in four or so."""
    if shape is None:
        shape = tuple(pick(draw, _DIMS) for _ in range(pick(draw, _NDIMS)))
    dtype = jnp.dtype(pick(draw, _DTYPES) if dtype is None else dtype)
    values = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=shape) * 3
    if dtype == jnp.bool_:
        values = values > 0
    elif jnp.issubdtype(dtype, jnp.integer):
        values = np.round(values)
    x = values.astype(dtype)
    if numpy and draw(st.integers(0, 3)) == 3:
        return x
    return jnp.asarray(x)


@st.composite
def leaves(draw: st.DrawFn, *, non_arrays: bool = True) -> Any:
    """An array leaf of a small shape and dtype (`float32`, `int32`, `bool`, `float16`,
    `bfloat16`; jax arrays, and a numpy one time in five or so), or (optionally) a non-array
    leaf: an int, a float, a function, a string."""
    if not non_arrays or pick(draw, [(3, True), (1, False)]):
        return array(draw, numpy=True)
    return _non_array(draw)


def _non_array(draw: st.DrawFn) -> Any:
    kind = pick(draw, [(3, "int"), (2, "float"), (2, "function"), (2, "string")])
    if kind == "int":
        return draw(st.integers(-5, 5))
    if kind == "float":
        return draw(st.floats(-2, 2, allow_nan=False))
    if kind == "function":
        return draw(st.sampled_from([jax.nn.relu, jnp.tanh]))
    return draw(st.text(string.ascii_lowercase, min_size=1, max_size=3))


@dataclasses.dataclass(frozen=True)
class _Kinds:
    """What `pytrees()` may draw (a framework's kinds only where it is installed)."""

    max_leaves: int
    non_arrays: bool
    none: bool
    custom: bool
    static: bool
    ties: bool
    eqx: type | None
    nnx: type | None
    variables: tuple[Callable[[Any], Any], ...]
    partitioned: Callable[..., Any] | None
    parameter: Callable[..., Any] | None

    def leaf_table(self) -> list[tuple[int, str]]:
        table = [(52, "array")]
        table += [(12, "non-array")] if self.non_arrays else []
        table += [(8, "none")] if self.none else []
        table += [(4, "static")] if self.static else []
        table += [(6, "variable")] if self.variables else []
        table += [(5, "partitioned")] if self.partitioned is not None else []
        table += [(5, "parameter")] if self.parameter is not None else []
        return table

    def node_table(self) -> list[tuple[int, str]]:
        table = [(22, "list"), (13, "tuple"), (22, "dict")]
        table += [(6, "pair"), (6, "keyed"), (6, "unkeyed")] if self.custom else []
        table += [(8, "eqx")] if self.eqx is not None else []
        table += [(10, "nnx"), (3, "nnx state")] if self.nnx is not None else []
        return table


class _Drawing:
    """One tree being drawn: its leaf budget, and what it has drawn that a later node
    may be tied to (arrays, NNX variables and modules, containers with children)."""

    def __init__(self, kinds: _Kinds) -> None:
        self.kinds = kinds
        self.leaves = 0
        self.pool: list[Any] = []

    def keep(self, node: Any) -> Any:
        if self.kinds.ties and _shareable(node, self.kinds):
            self.pool.append(node)
        return node


def _shareable(node: Any, kinds: _Kinds) -> bool:
    if isinstance(node, jax.Array | np.ndarray):
        return node.size > 0
    if isinstance(node, list | tuple | dict):
        return len(node) > 0
    nnx_types = tuple(t for t in (kinds.nnx, *kinds.variables) if isinstance(t, type))
    return bool(nnx_types) and isinstance(node, nnx_types)


#: How likely a node is a leaf, by depth: the root almost never, depth four always.
_LEAF_ODDS = [(1, 19), (7, 13), (11, 9), (15, 5)]
_SIZES = [(40, 2), (25, 3), (18, 1), (10, 0), (7, 4)]


def _tree(draw: st.DrawFn, d: _Drawing, depth: int) -> Any:
    """A node at `depth`: one drawn afresh or, one time in fifteen, a tie to one drawn
    before (only complete subtrees are kept, so a tie is never a cycle)."""
    if d.pool and pick(draw, [(14, False), (1, True)]):
        return d.pool[draw(st.integers(0, len(d.pool) - 1))]
    return d.keep(_fresh(draw, d, depth))


def _fresh(draw: st.DrawFn, d: _Drawing, depth: int) -> Any:
    leafy = depth >= len(_LEAF_ODDS) or d.leaves >= d.kinds.max_leaves
    odds = _LEAF_ODDS[min(depth, len(_LEAF_ODDS) - 1)]
    # The root shrinks towards a container (a leaf alone is seldom the failing tree).
    table = (
        [(odds[1], False), (odds[0], True)] if depth == 0 else [(odds[0], True), (odds[1], False)]
    )
    if leafy or pick(draw, table):
        d.leaves += 1
        return _leaf(draw, d.kinds)
    kind = pick(draw, d.kinds.node_table())

    def kids(n: int) -> list[Any]:
        return [_tree(draw, d, depth + 1) for _ in range(n)]

    if kind == "list":
        return kids(pick(draw, _SIZES))
    if kind == "tuple":
        return tuple(kids(pick(draw, _SIZES)))
    if kind == "dict":
        n = pick(draw, _SIZES)
        names = draw(st.lists(st.sampled_from(_KEYS), min_size=n, max_size=n, unique=True))
        return dict(zip(names, kids(len(names)), strict=True))
    if kind == "pair":
        return Pair(*kids(2))
    if kind == "keyed":
        return Keyed(*kids(2))
    if kind == "unkeyed":
        return Unkeyed(*kids(pick(draw, _SIZES)))
    if kind == "eqx":
        assert d.kinds.eqx is not None
        return d.kinds.eqx(*kids(2), draw(st.sampled_from(["x", "y"])))
    assert d.kinds.nnx is not None
    if kind == "nnx state":
        return nnx_state(_nnx_module(draw, d.kinds, 2))
    a = _variable(draw, d.kinds) if pick(draw, [(3, False), (2, True)]) else kids(1)[0]
    return d.kinds.nnx(a, kids(1)[0])


def _variable(draw: st.DrawFn, kinds: _Kinds) -> Any:
    return draw(st.sampled_from(kinds.variables))(array(draw))


def _nnx_module(draw: st.DrawFn, kinds: _Kinds, depth: int) -> Any:
    """An NNX module of `Variable`s and modules (`depth` levels at most)."""
    assert kinds.nnx is not None

    def child() -> Any:
        deeper = depth > 1 and pick(draw, [(2, False), (1, True)])
        return _nnx_module(draw, kinds, depth - 1) if deeper else _variable(draw, kinds)

    return kinds.nnx(child(), child())


def _leaf(draw: st.DrawFn, kinds: _Kinds) -> Any:
    kind = pick(draw, kinds.leaf_table())
    if kind == "array":
        return array(draw, numpy=True)
    if kind == "non-array":
        return _non_array(draw)
    if kind == "none":
        return None
    if kind == "static":
        return Static(draw(st.sampled_from(["s", "t"])))
    if kind == "variable":
        return _variable(draw, kinds)
    x = array(draw)
    if kind == "partitioned":
        assert kinds.partitioned is not None
        names = tuple(draw(st.sampled_from([None, "data", "model"])) for _ in range(x.ndim))
        return kinds.partitioned(x, names=names)
    assert kinds.parameter is not None
    return kinds.parameter(value=x, label=f"param_{draw(st.integers(0, 99))}")


@st.composite
def _pytrees(draw: st.DrawFn, kinds: _Kinds) -> Any:
    return _tree(draw, _Drawing(kinds), 0)


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
    """A strategy for pytrees: the kinds of trees treewalk's calls, and your transforms,
    must get right.

    The trees are varied in structure: containers have two or three children more often
    than not, each drawn apart (a list reversed or a dict updated in place shows), of
    every kind below unless its argument is `False`; a framework's kinds only where the
    framework is installed (it is imported when `pytrees()` is called, not when
    `treewalk.testing` is imported).

    - Containers: dicts (keys such as `"bias"`, `"kernel"`, Haiku's `"mlp/~/linear_0"`),
      lists, tuples, empty ones included.
    - Leaves: arrays of small shapes (empty ones, one time in twenty, and 0-d ones) and
      dtypes `float32`, `int32`, `bool`, `float16`, `bfloat16`, jax arrays and (one in
      five or so) numpy arrays; non-array leaves (ints, floats, functions, strings); `None`.
    - Custom nodes: `Pair` (a namedtuple), `Keyed` (registered with keys), `Unkeyed`
      (without keys), and `Static` nodes (`jax.tree_util.register_static`: no children).
    - Equinox modules with a static field (`EqxNode`).
    - Flax NNX: modules (`NnxNode`, mutable) holding `Variable`s, other modules or any
      subtree; `nnx.Param`/`nnx.BatchStat` variables on their own; `nnx.State` of a
      module.
    - Flax linen `Partitioned` boxes (`nn.Partitioned(x, names=...)`).
    - penzai `Parameter`s (`pz.Parameter(value=x, label=...)`), mutable leaves.
    - Ties, in one tree in eight, and deliberate: one thing placed at two paths or more
      (an array, a list of two, an NNX `Variable` or module shared by two parents).

    For trees shaped like a model's parameters, see
    [`params_trees`][treewalk.testing.params_trees].

    **Arguments:**

    - `max_leaves`: a bound on the tree's size (its leaves, about).
    - `non_arrays`: include non-array leaves (ints, floats, functions, strings).
    - `none`: include `None` children (absent optional arrays).
    - `custom`: include `Pair` (namedtuple), `Keyed` and `Unkeyed` custom nodes.
    - `equinox`: include Equinox modules with a static field.
    - `nnx`: include NNX modules, `Variable`s, `State` and shared `Variable`s.
    - `linen`: include linen `Partitioned` boxes.
    - `penzai`: include penzai `Parameter`s.
    - `static`: include `Static` nodes.
    - `ties`: include things reached by two paths (and, with `nnx`, shared `Variable`s
      and modules).

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
            again = tw.replace(once, tw.arrays, tw.zeros, strict=False)
            assert trees_equal(once, again)

        test_zeroing_is_idempotent()
        ```
    """
    kinds = _Kinds(
        max_leaves=max_leaves,
        non_arrays=non_arrays,
        none=none,
        custom=custom,
        static=static,
        ties=ties,
        eqx=eqx_node() if equinox else None,
        nnx=nnx_node() if nnx else None,
        variables=nnx_variables() if nnx else (),
        partitioned=linen_partitioned() if linen else None,
        parameter=penzai_parameter() if penzai else None,
    )
    return _pytrees(kinds)


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

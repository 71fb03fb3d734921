"""Law checks: properties a user can assert of their own tree transform."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeAlias, TypeGuard

import jax
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._core.paths import show_path
from ._nodes import _eq, trees_equal
from ._strategies import pytrees

#: A tree transform under test: `transform(tree)` or `transform(tree, key)`.
Transform: TypeAlias = Callable[[Any], Any] | Callable[[Any, Any], Any]


def _keyed(transform: Callable[..., Any]) -> TypeGuard[Callable[[Any, Any], Any]]:
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
    # The active profile's settings, but for what these checks need: no deadline (the
    # first example compiles, which takes seconds) and no health check on slow or large
    # trees. Set here, so a user's script passes with hypothesis' defaults.
    active = settings()
    suppress = {*active.suppress_health_check, HealthCheck.too_slow, HealthCheck.data_too_large}
    kw: dict[str, Any] = {"deadline": None, "suppress_health_check": list(suppress)}
    if max_examples is not None:
        kw["max_examples"] = max_examples
    settings(active, **kw)(test)()


def _leaves(tree: Any) -> list[tuple[Any, Any]]:
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _where(path: Any) -> str:
    return show_path(path)


def _snapshot(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.copy()
    return x


def check_structure_preserving(
    transform: Transform,
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

    The other settings are the active profile's, but for two the checks set themselves:
    `deadline=None` (the first example compiles, which takes longer than hypothesis'
    default deadline of 200 ms) and the `too_slow`/`data_too_large` health checks off. So
    the checks pass in a plain script or test suite, without a profile.

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
    transform: Transform,
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
    transform: Transform,
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

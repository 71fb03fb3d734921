"""The structural laws: a transform keeps its input's structure (ties included), leaves
its input untouched, and gives the same tree for the same key; `check_laws`, all that
apply. The value laws are in `_values.py`, those about `jit`/`vmap` in `_traced.py`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from hypothesis import settings as Settings
from hypothesis import strategies as st

from .._core.errors import ArgumentError
from .._frameworks import unboxed
from ._compare import describe, first_difference, leaf_list, map_once, structure_mismatch, where
from ._processes import Worker
from ._run import Transform, call, check_callable, keyed, run_law
from ._zoo import pytrees_default


def check_structure_preserving(
    transform: Transform,
    *,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check that `transform` returns a tree of the input's structure: the same leaf
    paths and treedef, every box (NNX `Variable`, linen `Partitioned`, penzai
    `Parameter`) still a box of its type, every array with its shape and dtype, and every
    tie kept (an array or a box reached by several paths of the input has equal values
    at those paths of the output).

    Runs a hypothesis test over `trees`: by default a zoo first (one fixed tree of each
    kind transforms get wrong most often: lists and dicts of distinct arrays, a tie, NNX
    modules and a shared variable, boxes, `float16` and numpy leaves, `None` and custom
    nodes), then [`pytrees()`][treewalk.testing.pytrees]. `transform(tree)` or, if it
    takes two arguments, `transform(tree, key)`.

    **Arguments:**

    - `transform`: the function under test.
    - `trees`: a strategy for the input trees (`st.just(tree)` for one tree); then no
      zoo.
    - `max_examples`: how many trees to try; overrides `settings`.
    - `settings`: a `hypothesis.settings` to run under; the active profile by default.

    Every check runs under your settings (or the active profile), but for three it sets
    itself: no deadline when yours is hypothesis' default of 200 ms (the first example
    compiles, which takes longer), the `too_slow` and `data_too_large` health checks off,
    and no `explain` phase (it re-runs the failing example hundreds of times; the
    message names the failing tree's paths instead).

    **Raises:**

    One `AssertionError`, whatever hypothesis found: its first line is the law and what
    broke it (the first path where the output differs), then the falsifying tree's
    leaves, shrunk by hypothesis; any other distinct failure hypothesis found (and a
    flaky one) is noted below. An exception the transform raises is a failure too (it is
    chained as the cause).

    !!! Example

        ```python
        import treewalk as tw
        from treewalk.testing import check_structure_preserving

        check_structure_preserving(
            lambda t: tw.replace(t, tw.arrays, tw.zeros, strict=False)
        )
        ```
    """
    check_callable("check_structure_preserving", transform)

    def prop(tree: Any, seed: int) -> None:
        why = structure_mismatch(tree, call(transform, tree, seed))
        assert why is None, why

    run_law(
        "check_structure_preserving",
        prop,
        trees,
        pytrees_default,
        transform,
        max_examples,
        settings,
    )


def _snapshot(x: Any) -> Any:
    return x.copy() if isinstance(x, np.ndarray) else x


def check_pure(
    transform: Transform,
    *,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check that `transform` leaves its input untouched: after the call the input has
    the same structure, the same leaf objects (inside boxes too: an NNX `Variable` or a
    penzai `Parameter` given a new value fails), and, for numpy arrays (which can be
    written in place), the same values. A list reversed or a dict updated in place
    fails.

    Arguments, settings and failures as
    [`check_structure_preserving`][treewalk.testing.check_structure_preserving].

    !!! Example

        ```python
        import pytest
        import treewalk as tw
        from treewalk.testing import check_pure

        check_pure(lambda t: tw.replace(t, tw.arrays, tw.ones, strict=False))

        def normalise(tree):  # a bug: puts its results into the input's dicts
            if isinstance(tree, dict):
                for k, v in tree.items():
                    tree[k] = v / 2 if hasattr(v, "dtype") else normalise(v)
            return tree

        with pytest.raises(AssertionError, match="replaced in place"):
            check_pure(normalise)
        ```
    """
    check_callable("check_pure", transform)

    def prop(tree: Any, seed: int) -> None:
        treedef = jax.tree.structure(tree)
        leaves = leaf_list(tree)
        saved = [(x, unboxed(x), _snapshot(unboxed(x))) for _, x in leaves]
        call(transform, tree, seed)
        assert jax.tree.structure(tree) == treedef, (
            "the input's structure was changed in place (a container of the input gained, "
            "lost or reordered children)"
        )
        for (path, y), (x, inner, copy) in zip(leaf_list(tree), saved, strict=True):
            assert y is x, (
                f"at {where(path)}, the input's {describe(x)} was replaced in place, by "
                f"{'another ' if describe(x) == describe(y) else ''}{describe(y)}"
            )
            now = unboxed(y)
            assert now is inner, (
                f"at {where(path)}, the input's {type(x).__name__} was given a new value in "
                f"place: {describe(inner)} became "
                f"{'another ' if describe(inner) == describe(now) else ''}{describe(now)}"
            )
            if isinstance(copy, np.ndarray):
                assert np.array_equal(copy, inner, equal_nan=copy.dtype.kind in "fc"), (
                    f"at {where(path)}, the input's numpy array was written in place"
                )

    run_law("check_pure", prop, trees, pytrees_default, transform, max_examples, settings)


def check_key_deterministic(
    transform: Callable[[Any, Any], Any],
    *,
    across_processes: bool = False,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check that `transform(tree, key)` is a function of its arguments: two calls with
    the same key give equal trees (arrays compared by value), on a fresh copy of the
    input each time. A transform that draws from a global RNG (`np.random`, Python's
    `random`) or keeps a counter fails.

    With `across_processes=True`, each tree is also sent to a second Python process
    (started once per check, with another `PYTHONHASHSEED`), which runs the transform
    with the same key: a transform whose keys come from `hash()` of a string, `id()` or
    the order of a `set` gives the same tree twice in one process, and another one
    there. The transform and the trees go by `pickle`: define the transform at module
    level of an importable module (a test module is one), or as a `functools.partial`
    of such a function.

    Other arguments, settings and failures as
    [`check_structure_preserving`][treewalk.testing.check_structure_preserving].

    **Raises:**

    `TypeError` (`tw.ArgumentError`) for a transform that takes no key, or (with
    `across_processes`) one that cannot be pickled; `AssertionError` where the law
    fails.

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
    check_callable("check_key_deterministic", transform)
    if not keyed(transform):
        raise _key_error(transform)
    worker = Worker(transform) if across_processes else None

    def prop(tree: Any, seed: int) -> None:
        first = call(transform, tree, seed)
        again = call(transform, map_once(_snapshot, tree), seed)  # a copy, ties kept
        why = first_difference(first, again)
        assert why is None, f"two calls with the same key differ {_at(why)}"
        if worker is not None:
            worker.check(tree, seed, first)

    try:
        run_law(
            "check_key_deterministic",
            prop,
            trees,
            pytrees_default,
            transform,
            max_examples,
            settings,
        )
    finally:
        if worker is not None:
            worker.close()


def _at(why: str) -> str:
    return why if why.startswith("at ") else f"in structure: {why}"


def _key_error(transform: Any) -> Exception:
    return ArgumentError(
        f"check_key_deterministic needs a transform(tree, key); "
        f"{getattr(transform, '__qualname__', transform)!r} takes one argument. "
        f"Use check_pure for transforms without a key."
    )


def check_laws(
    transform: Transform,
    *,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """All the structural checks that apply: structure preserved, input untouched, and,
    for a `transform(tree, key)`, the same key giving the same tree. The value laws
    (`check_only_selected`, `check_matches_reference`, `check_idempotent`,
    `check_commutes_with_jit`, `check_commutes_with_vmap`) say more about a transform
    and are yours to choose.

    Arguments, settings and failures as
    [`check_structure_preserving`][treewalk.testing.check_structure_preserving].

    !!! Example

        ```python
        import treewalk as tw
        from treewalk.testing import check_laws

        check_laws(
            lambda t: tw.replace(t, tw.arrays, tw.zeros, strict=False),
            max_examples=10,
        )
        ```
    """
    kw: dict[str, Any] = {"trees": trees, "max_examples": max_examples, "settings": settings}
    check_structure_preserving(transform, **kw)
    check_pure(transform, **kw)
    if keyed(transform):
        check_key_deterministic(transform, **kw)

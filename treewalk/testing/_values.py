"""The value laws a user opts into: only the selected leaves change, the selected ones
change as a reference function says, and a transform applied twice is applied once."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
from hypothesis import settings as Settings
from hypothesis import strategies as st

from .._select.algebra import Selector, as_selector, brief
from ._compare import by_path, first_difference, mismatch, where
from ._run import Transform, TransformRaised, call, check_callable, keyed, run_law
from ._zoo import params_default, pytrees_default

#: The default tolerances of the value laws: relative and absolute, and never under four
#: units in the last place of a leaf's dtype.
RTOL = ATOL = 1e-6


def check_only_selected(
    transform: Transform,
    selector: Any,
    *,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check that `transform` changes no leaf that `selector` does not cover: every
    other leaf of the output equals (bit for bit, NaN equal to NaN) the input's leaf at
    its path. A transform meant for `"blocks/0/**"` that changes another block fails.

    The leaves a selector covers are those `tw.replace(tree, selector, ...)` would
    change (the leaves at or below what it picks; a value inside a box by the box's
    path). Runs over `trees`, by default a fixed model of each installed framework (the
    zoo), then [`params_trees()`][treewalk.testing.params_trees]: model-shaped trees
    whose paths a selector of yours names.

    **Arguments:**

    - `transform`: `transform(tree)` or `transform(tree, key)`.
    - `selector`: what the transform may change: a selector, or a glob `str`, a class or
      a `(path, node) -> bool` callable.
    - `trees`, `max_examples`, `settings`: as for
      [`check_structure_preserving`][treewalk.testing.check_structure_preserving].

    **Raises:**

    `tw.SelectorError` for what is not a selector; one `AssertionError` naming the
    first leaf that changed, and the falsifying tree's paths.

    !!! Example

        ```python
        import pytest
        import treewalk as tw
        from treewalk.testing import check_only_selected

        def halve_first_block(tree):
            first = tw.glob("blocks/0/**") & tw.params
            return tw.replace(tree, first, lambda p, x, k: x / 2, strict=False)

        check_only_selected(halve_first_block, "blocks/0/**", max_examples=20)
        with pytest.raises(AssertionError, match="not selected"):
            check_only_selected(halve_first_block, "blocks/0/attn/**")
        ```
    """
    check_callable("check_only_selected", transform)
    sel = as_selector(selector)
    m = sel.compile()

    def prop(tree: Any, seed: int) -> None:
        before = by_path(tree, m)  # the input's leaves, before the call
        out = call(transform, tree, seed)
        why = _changes_of(before, out, sel, None, 0.0, 0.0)
        assert why is None, why

    run_law("check_only_selected", prop, trees, params_default, transform, max_examples, settings)


def _changes_of(
    before: dict[tuple[Any, ...], Any],
    out: Any,
    sel: Selector,
    expect: Callable[[Any, Any], Any] | None,
    rtol: float,
    atol: float,
) -> str | None:
    """The first leaf of `out` that breaks the law, against the input's leaves `before`
    (`by_path`): an unselected one that changed, or (with `expect`) a selected one that
    is not `expect(path, leaf)`."""
    after = by_path(out)
    for segs, (path, x, chosen) in before.items():
        if segs not in after:
            return f"the output has no leaf at {where(path)}"
        y = after[segs][1]
        if not chosen:
            why = mismatch(x, y)
            if why is not None:
                return f"at {where(path)}, not selected by {brief(sel)}, the leaf changed: {why}"
        elif expect is not None:
            why = mismatch(expect(path, x), y, rtol, atol)
            if why is not None:
                return f"at {where(path)}, the selected leaf is not what the reference says: {why}"
    return None


def _takes_key(reference: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(reference).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    n = sum(p.kind in kinds for p in params)
    return n >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params)


def check_matches_reference(
    transform: Transform,
    selector: Any,
    reference: Callable[..., Any],
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check that `transform` changes the leaves `selector` covers as `reference` says,
    and no other: each covered leaf `x` at `path` of the input becomes
    `reference(path, x)` (with its shape and dtype, within `rtol`/`atol`), every other
    leaf stays as it is. For a `transform(tree, key)`, a `reference(path, x, key)` gets
    the call's key too (`tw.key_for_path(key, path)` is the key `tw.replace` gives that
    path).

    A transform that scales by the wrong fan (`x.shape[-1]` where the layout says
    `x.shape[0]`) or forgets a `dtype` fails, as does one that writes where it should
    not.

    **Arguments:**

    - `transform`: the function under test.
    - `selector`: the leaves that change (as for
      [`check_only_selected`][treewalk.testing.check_only_selected]).
    - `reference`: `reference(path, leaf) -> new leaf`, the spec, leaf by leaf; `path`
      is a key path as `tw.replace`'s `fn` gets it.
    - `rtol`, `atol`: tolerances for floating-point leaves (never under four units in
      the last place of the leaf's dtype); other leaves must be equal.
    - `trees`, `max_examples`, `settings`: as for
      [`check_only_selected`][treewalk.testing.check_only_selected] (default trees:
      [`params_trees()`][treewalk.testing.params_trees]).

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw
        from treewalk.testing import check_matches_reference

        # Kernels (in, out) scaled by 1/sqrt(fan_in): linen and NNX trees.
        def rescale(tree):
            def fn(path, x, key):
                return x / jnp.sqrt(x.shape[0]).astype(x.dtype)
            return tw.replace(tree, "**/kernel", fn, strict=False)

        check_matches_reference(
            rescale,
            "**/kernel",
            lambda path, x: x / jnp.sqrt(x.shape[0]).astype(x.dtype),
            max_examples=20,
        )
        ```
    """
    check_callable("check_matches_reference", transform)
    check_callable("check_matches_reference", reference)
    sel = as_selector(selector)
    m = sel.compile()
    with_key = _takes_key(reference)

    def prop(tree: Any, seed: int) -> None:
        key = jax.random.key(seed) if keyed(transform) else None
        before = by_path(tree, m)
        out = call(transform, tree, seed, key=key)

        def expect(path: Any, x: Any) -> Any:
            try:
                return reference(path, x, key) if with_key else reference(path, x)
            except Exception as err:
                raise TransformRaised(f"the reference raised {type(err).__name__}: {err}") from err

        why = _changes_of(before, out, sel, expect, rtol, atol)
        assert why is None, why

    run_law(
        "check_matches_reference", prop, trees, params_default, transform, max_examples, settings
    )


def check_idempotent(
    transform: Transform,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    trees: st.SearchStrategy[Any] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check that applying `transform` twice gives what applying it once does (with the
    same key, for a `transform(tree, key)`): what a projection, a re-initialisation to
    fixed values, a cast or a clip should obey.

    Arguments and settings as
    [`check_matches_reference`][treewalk.testing.check_matches_reference] (default
    trees: [`pytrees()`][treewalk.testing.pytrees]).

    !!! Example

        ```python
        import jax.numpy as jnp
        import pytest
        import treewalk as tw
        from treewalk.testing import check_idempotent

        def clip(tree):
            return tw.replace(
                tree, tw.params, lambda p, x, k: jnp.clip(x, -1, 1), strict=False
            )

        check_idempotent(clip, max_examples=20)

        def squash(tree):  # tanh is no projection: squash(squash(t)) != squash(t)
            return tw.replace(
                tree, tw.params, lambda p, x, k: jnp.tanh(x), strict=False
            )

        floats = tw.testing.params_trees()
        with pytest.raises(AssertionError, match="applied twice"):
            check_idempotent(squash, trees=floats)
        ```
    """
    check_callable("check_idempotent", transform)

    def prop(tree: Any, seed: int) -> None:
        once = call(transform, tree, seed)
        twice = call(transform, once, seed, what="the transform, applied to its output,")
        why = first_difference(once, twice, rtol, atol)
        assert why is None, f"the transform applied twice differs from it applied once: {why}"

    run_law("check_idempotent", prop, trees, pytrees_default, transform, max_examples, settings)

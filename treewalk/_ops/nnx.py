"""A Flax NNX filter made from a treewalk selector.

NNX filters are callables `(path, value) -> bool` that NNX calls on each `Variable`,
with NNX's own path (a tuple of `str`/`int`, no `.value` entry). This module never
imports Flax: the filter only looks at what NNX hands it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jax.tree_util import GetAttrKey, SequenceKey

from .._core.node import Node
from .._core.paths import BoxKey, Path, path_segments
from .._frameworks import unboxed
from .._select.algebra import Selector, as_selector, brief
from .._select.strict import Recorder
from .query import covered


class NNXFilter:
    """An NNX filter `(path, value) -> bool` built by [`tw.nnx_filter`][treewalk.nnx_filter]."""

    def __init__(self, selector: Selector, selected: frozenset[tuple[Any, ...]] | None) -> None:
        self.selector = selector
        self._selected = selected

    def __call__(self, path: tuple[Any, ...], value: Any) -> bool:
        segs = tuple(path)
        if self._selected is not None:
            return segs in self._selected
        inner = unboxed(value)  # a Variable: look inside it, as every call does
        outer = value if inner is not value else None
        keys: Path = tuple(SequenceKey(s) if type(s) is int else GetAttrKey(str(s)) for s in segs)
        if outer is not None:
            keys = (*keys, BoxKey("value"))
        n = Node(keys, inner, outer, None, True)  # NNX asks about variables: leaves
        n._segs = segs
        return bool(self.selector.match(n))

    def __repr__(self) -> str:
        bound = "" if self._selected is None else ", <model>"
        return f"tw.nnx_filter({brief(self.selector)}{bound})"


def nnx_filter(
    selector: Any, model: Any = None, *, strict: bool = True
) -> Callable[[tuple[Any, ...], Any], bool]:
    """A Flax NNX filter that picks the variables `selector` selects.

    Use it wherever NNX takes a filter: `nnx.state(model, f)`, `nnx.split(model, f, ...)`,
    `nnx.Optimizer(model, tx, wrt=f)`, `nnx.DiffState(0, f)`.

    NNX calls a filter once per `Variable`, with the variable's path only, so two modes:

    - `tw.nnx_filter(selector)`: the selector sees each variable's path (NNX's tuple, as
      segments), its bare value, and the `Variable` as its box, so globs, `tw.name`,
      `tw.regex`, `tw.of_type(nnx.Param)` and predicates work, on any model. Selectors
      that look at enclosing layers (`tw.inside(...)`, `tw.of_type(nnx.Linear)`, or a
      glob naming a layer, `"l1"`: write `"l1/**"`) see no layers here: pass the model.
    - `tw.nnx_filter(selector, model)`: the selection is made on `model`, exactly as
      [`tw.mask`][treewalk.mask] makes it: the selector is asked about each variable,
      and sees the layers around it, so `tw.inside(nnx.LayerNorm)` picks the norm's
      scale and bias, and `~tw.inside(nnx.LayerNorm) & ~tw.name("bias")` is a
      weight-decay filter.

    Globs match segments, so `"**/kernel"` is every kernel and `"l1/*"` every variable of
    `l1`. Compare `nnx.PathContains("l1")`, which tests whole path elements: it does not
    match `"l10"` (and cannot match a substring) — with treewalk, write the glob you mean:
    `"l1/**"`, `"l1*/**"` or `tw.regex(r"l1\\d*/.*")`.

    **Arguments:**

    - `selector`: anything `tw.replace` takes.
    - `model`: optional, the NNX module (or `nnx.State`) the filter will be used on.
    - `strict` (with `model` only): every atom of the selector must match a variable
      of `model` (`tw.NoMatchError` otherwise, as in [`tw.mask`][treewalk.mask]), so
      `wrt=tw.nnx_filter("haed/**", model)` cannot silently optimise nothing.
      Without `model` nothing can be checked: pass the model where a typo matters.

    !!! warning "`wrt=` decides what trains, not what is decayed"

        `nnx.Optimizer(model, optax.adamw(...), wrt=tw.nnx_filter(sel, model))`
        trains only what `sel` selects: the rest is frozen. To exempt biases and norms
        from weight decay, keep `wrt=nnx.Param` and pass a mask to the optimiser:
        `optax.adamw(1e-3, mask=tw.mask(model, sel))` (see the recipes).

    **Returns:**

    A callable `(path, value) -> bool`.

    !!! Example

        ```python
        from flax import nnx
        import treewalk as tw

        model = nnx.Sequential(nnx.Linear(2, 4, rngs=nnx.Rngs(0)),
                               nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
        kernels = nnx.state(model, tw.nnx_filter("**/kernel"))
        assert [tw.path_str(p) for p in tw.paths(kernels, tw.arrays)] == [
            "layers/0/kernel", "layers/1/kernel"]
        first = tw.nnx_filter(tw.inside(tw.of_type(nnx.Linear) & "layers/0"), model)
        assert len(tw.paths(nnx.state(model, first), tw.arrays)) == 2
        ```
    """
    sel = as_selector(selector)
    if model is None:
        return NNXFilter(sel, None)
    selected: set[tuple[Any, ...]] = set()
    rec = Recorder() if strict else None
    m = sel.compile(None if rec is None else rec.wrap)

    def at_leaf(n: Node, picked: bool) -> None:
        if picked:
            selected.add(path_segments(n.path))

    covered(model, m, at_leaf, rebuild=False)
    if rec is not None:
        rec.check(model, [(None, sel)], call="tw.nnx_filter", is_leaf=None)
    return NNXFilter(sel, frozenset(selected))

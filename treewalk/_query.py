"""Queries: select, paths, where, mask, labels — each one pass of the engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._engine import GO, HIT, KEEP, Pass
from ._errors import LabelError, StructureError
from ._node import Node
from ._path import Path, show_path
from ._selector import Selector, as_selector
from ._typing import IsLeaf, PyTree


def find(
    tree: Any,
    sel: Selector,
    *,
    is_leaf: IsLeaf = None,
    include_none: bool = False,
    outermost: bool = False,
) -> list[Node]:
    """The `Node`s `sel` matches, in pre-order: every match, or with `outermost` only
    those not inside another (the nodes `replace` acts on). `None` only with
    `include_none`."""
    p = Pass(
        select=sel.compile(),
        outermost=outermost,
        include_none=include_none,
        is_leaf=is_leaf,
        rebuild=False,
    )
    p.run(tree)
    return p.hits


def select(
    tree: PyTree,
    selector: Any,
    *,
    is_leaf: IsLeaf = None,
    include_none: bool = False,
    outermost: bool = False,
) -> list[tuple[Path, Any]]:
    """Every node `selector` matches, as `(path, node)` pairs in traversal order.

    Internal nodes are included (a selector may match a whole layer), and so are nodes
    inside other matched nodes. Values inside boxes (NNX `Variable`, linen `Partitioned`,
    penzai `Parameter`) are returned bare, at a path ending in a `tw.BoxKey`. `None`
    nodes are skipped unless `include_none=True`. A mutable object (an NNX module or
    variable) reached by several paths is visited once, at the first.

    **Arguments:**

    - `tree`: any pytree.
    - `selector`: a selector, or a glob `str`, a class or a `(path, node) -> bool` callable.
    - `is_leaf`: as in JAX.
    - `include_none`: also consider `None` nodes (absent optional arrays).
    - `outermost`: skip matches inside other matches (the nodes `replace` acts on). Also
      faster: the pass does not go into a match.

    **Returns:**

    `list[tuple[path, node]]`; empty when nothing matches (not an error).

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw

        params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
        [(path, bias)] = tw.select(params, "**/bias")
        assert tw.path_str(path) == "dense/bias" and bias.shape == (3,)
        ```
    """
    hits = find(
        tree,
        as_selector(selector),
        is_leaf=is_leaf,
        include_none=include_none,
        outermost=outermost,
    )
    return [(n.path, n.node) for n in hits]


def paths(
    tree: PyTree,
    selector: Any,
    *,
    is_leaf: IsLeaf = None,
    include_none: bool = False,
    outermost: bool = False,
) -> list[Path]:
    """The paths of [`tw.select`][treewalk.select], without the nodes.

    !!! Example

        ```python
        import treewalk as tw

        assert tw.paths({"a": 1, "b": {"a": 2}}, "**/a") == [
            (tw.DictKey("a"),), (tw.DictKey("b"), tw.DictKey("a"))]
        ```
    """
    hits = find(
        tree,
        as_selector(selector),
        is_leaf=is_leaf,
        include_none=include_none,
        outermost=outermost,
    )
    return [n.path for n in hits]


_MISSING: Any = object()


def lookup(tree: Any, wanted: list[Path], what: str, is_leaf: IsLeaf = None) -> list[Any]:
    """The nodes at `wanted` paths (box entries included) in `tree`, in one pass that goes
    only where one of the paths leads."""
    index = {path: i for i, path in enumerate(wanted)}
    on_the_way = {path[:k] for path in wanted for k in range(len(path))}
    out = [_MISSING] * len(wanted)

    def visit(n: Node) -> int:
        i = index.get(n.path)
        if i is not None:
            out[i] = n.node
            return HIT
        return GO if n.path in on_the_way else KEEP

    Pass(visit, is_leaf=is_leaf, rebuild=False).run(tree)
    missing = [p for p, x in zip(wanted, out, strict=True) if x is _MISSING]
    if missing:
        raise StructureError(
            f"{what}: {len(missing)} of its {len(wanted)} paths are not in the tree it was "
            f"given, e.g. {show_path(missing[0])}. A where-function looks nodes up by the "
            f"paths it found in the tree it was built on: build it on a tree of the same "
            f"structure as the one you pass (`tw.where(model, sel)` for `eqx.tree_at(..., "
            f"model, ...)`)."
        )
    return out


def where(tree: PyTree, selector: Any, *, is_leaf: IsLeaf = None) -> Callable[[Any], list[Any]]:
    """A where-function for `eqx.tree_at`: `t -> [the nodes selector picks in t]`.

    The nodes are the ones [`tw.replace`][treewalk.replace] would act on: in traversal
    order, outermost first (nothing inside a picked node), `None` never. They are found
    in `tree` now and looked up by path in whatever tree of the same structure the
    returned function is given (`tw.StructureError` if a path is missing there).

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        mlp = eqx.nn.MLP(2, 2, 8, 2, key=jax.random.key(0))
        mlp = eqx.tree_at(tw.where(mlp, "**/bias"), mlp, replace_fn=jnp.zeros_like)
        assert all((l.bias == 0).all() for l in mlp.layers)
        ```
    """
    sel = as_selector(selector)
    found = [n.path for n in find(tree, sel, is_leaf=is_leaf, outermost=True)]
    what = f"tw.where(..., {sel!r:.80})"

    def where_fn(t: Any) -> list[Any]:
        return lookup(t, found, what, is_leaf)

    return where_fn


def leaf_values(tree: Any, leaf: Callable[[Node], Any], is_leaf: IsLeaf) -> Any:
    """`tree` with every leaf (looking through boxes) replaced by `leaf(n)`: one pass, one
    unflatten. Boxes that are pytree nodes (NNX `Variable`, linen `Partitioned`) are kept,
    so the result has the tree's treedef; a box that is a leaf (a penzai `Parameter`)
    gives a leaf, its value's."""
    return Pass(leaf=leaf, is_leaf=is_leaf, bare_leaf_boxes=True).run(tree).finish()


def mask(tree: PyTree, selector: Any, *, is_leaf: IsLeaf = None) -> PyTree:
    """A pytree of `bool` with `tree`'s structure: `True` exactly at the leaves `selector`
    matches.

    The selector is asked about leaves only, so `~tw.name("bias")` means "every leaf but the
    biases". To mask everything inside a layer, say so: `tw.inside(tw.of_type(LayerNorm))`
    (a bare `tw.of_type(LayerNorm)` matches the layer, which is not a leaf).

    Boxes are kept (an NNX `State` mask holds `Param`s of `bool`), so the mask has the
    same treedef as the tree and works with `optax.masked`, `eqx.filter` and
    `eqx.partition`.

    !!! warning "Equinox models with optax"

        The mask of an Equinox model is itself an Equinox `Module`, and Modules are
        callable (equinox#193, optax#913). optax 0.2.8's `masked` only calls a mask whose
        leaves are callable, so a Module of bools works there, but older optax calls it,
        and `multi_transform` still calls a callable label tree. Passing a function works
        everywhere: `optax.adamw(1e-3, mask=lambda p: tw.mask(p, sel))`.

    !!! Example

        ```python
        import jax.numpy as jnp
        import optax
        import treewalk as tw

        params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
        decay = tw.mask(params, ~tw.name("bias"))
        assert decay == {"dense": {"kernel": True, "bias": False}}
        opt = optax.adamw(1e-3, mask=decay)
        ```
    """
    match = as_selector(selector).compile()
    return leaf_values(tree, match, is_leaf)


def labels(
    tree: PyTree, spec: Mapping[Any, Any], *, default: Any = None, is_leaf: IsLeaf = None
) -> PyTree:
    """A pytree of labels with `tree`'s structure, for `optax.multi_transform`.

    For an Equinox model pass a function, `param_labels=lambda p: tw.labels(p, spec)`:
    the label tree of a model is a `Module`, which `multi_transform` would call.

    Each leaf gets the label whose selector matches it. As in [`tw.mask`][treewalk.mask],
    selectors are asked about leaves only (use `tw.inside(...)` for "everything in this
    layer"). A leaf that two labels claim is an error; so is a leaf no label claims when
    `default` is `None`.

    **Arguments:**

    - `tree`: the parameters.
    - `spec`: `{label: selector, ...}`, in priority of nothing: overlaps are errors.
    - `default`: the label of leaves no selector claims.

    **Raises:**

    `tw.LabelError` naming the paths (up to five) and the labels involved.

    !!! Example

        ```python
        import jax.numpy as jnp
        import optax
        import treewalk as tw

        params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
        lab = tw.labels(params, {"decay": "**/kernel", "plain": "**/bias"})
        assert lab == {"dense": {"kernel": "decay", "bias": "plain"}}
        tx = optax.multi_transform(
            {"decay": optax.adamw(1e-3), "plain": optax.sgd(1e-3)}, lab)
        ```
    """
    if not isinstance(spec, Mapping) or not spec:
        raise LabelError(
            f"labels takes a non-empty mapping {{label: selector}}; got {type(spec).__name__}. "
            f"For example tw.labels(params, {{'decay': '**/kernel', 'no_decay': '**/bias'}})."
        )
    sels = [
        (lab, as_selector(s, what=f"the selector of label {lab!r}")) for lab, s in spec.items()
    ]
    matchers = [(lab, s.compile()) for lab, s in sels]
    conflicts: list[str] = []
    unlabelled: list[str] = []

    def leaf(n: Node) -> Any:
        labs = [lab for lab, m in matchers if m(n)]
        if len(labs) == 1:
            return labs[0]
        if not labs:
            if default is None:
                unlabelled.append(show_path(n.path))
            return default
        conflicts.append(f"{show_path(n.path)} (labels {', '.join(map(repr, labs))})")
        return labs[0]

    out = leaf_values(tree, leaf, is_leaf)
    if conflicts:
        raise LabelError(
            f"{len(conflicts)} leaves are claimed by more than one label: "
            f"{'; '.join(conflicts[:5])}{' ...' if len(conflicts) > 5 else ''}. "
            f"Make the selectors disjoint, e.g. {{'decay': sel, 'no_decay': ~sel}}."
        )
    if unlabelled:
        raise LabelError(
            f"{len(unlabelled)} leaves have no label: {', '.join(unlabelled[:5])}"
            f"{' ...' if len(unlabelled) > 5 else ''}. Add a selector that claims them or "
            f"pass default=<label>. Labels: {', '.join(repr(lab) for lab, _ in sels)}."
        )
    return out

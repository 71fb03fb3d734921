"""Queries: select, paths, where, mask, labels — each one pass of the engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._core.engine import GO, HIT, KEEP, Pass
from .._core.errors import LabelError, StructureError
from .._core.node import Hits, Node
from .._core.paths import Path, show_path
from .._core.types import IsLeaf, PyTree
from .._frameworks import nnx_kind, nnx_pure, variable_kind
from .._select.atoms import Selector, as_selector, brief
from .._select.strict import Recorder


def find(
    tree: Any,
    sel: Selector,
    *,
    is_leaf: IsLeaf = None,
    include_none: bool = False,
    outermost: bool = False,
) -> Hits:
    """The nodes `sel` matches, in pre-order: every match, or with `outermost` only
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
    return list(zip(hits.paths, hits.nodes, strict=True))


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
    return hits.paths


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
    found = find(tree, sel, is_leaf=is_leaf, outermost=True).paths
    what = f"tw.where(..., {brief(sel)})"

    def where_fn(t: Any) -> list[Any]:
        return lookup(t, found, what, is_leaf)

    return where_fn


def leaf_values(tree: Any, leaf: Callable[[Node], Any], is_leaf: IsLeaf) -> Any:
    """`tree` with every leaf (looking through boxes) replaced by `leaf(n)`: one pass, one
    unflatten. Boxes that are pytree nodes (NNX `Variable`, linen `Partitioned`) are kept,
    so the result has the tree's treedef; a box that is a leaf (a penzai `Parameter`)
    gives a leaf, its value's."""
    return Pass(leaf=leaf, is_leaf=is_leaf, bare_leaf_boxes=True).run(tree).finish()


def _pure(tree: Any, out: Any) -> Any:
    kind = nnx_kind(tree)
    return out if kind is None else nnx_pure(out, kind)


def mask(tree: PyTree, selector: Any, *, is_leaf: IsLeaf = None, strict: bool = True) -> PyTree:
    """A pytree of `bool` with `tree`'s structure: `True` exactly at the leaves `selector`
    matches.

    The selector is asked about leaves only, so `~tw.name("bias")` means "every leaf but the
    biases". To mask everything inside a layer, say so: `tw.inside(tw.of_type(LayerNorm))`
    (a bare `tw.of_type(LayerNorm)` matches the layer, which is not a leaf).

    Boxes are kept (a linen `Partitioned` mask holds `Partitioned` bools), so the mask
    has the same treedef as the tree and works with `optax.masked`, `eqx.filter` and
    `eqx.partition`.

    **NNX**: the mask of an NNX module or `nnx.State` is *pure*, the form
    `nnx.Optimizer` hands optax: an `nnx.State` with a `bool` where each `Variable` was
    (as `nnx.as_pure` gives). From a module it holds the `nnx.Param`s only (what
    `nnx.Optimizer(..., wrt=nnx.Param)` optimises), but the selection is made on the
    module, so `tw.inside(nnx.LayerNorm)` works; an `nnx.State` holds no modules, so
    there select by path (`"**/norm/**"`). Either way it works as
    `optax.adamw(..., mask=tw.mask(model, sel))`, and so does
    `mask=lambda p: tw.mask(p, sel)`.

    **Strict** (default): every atom of the selector (each `tw.name`, glob, regex,
    `tw.of_type`, `tw.inside`) must match at least one leaf, so a typo such as
    `~tw.name("biass")` (which would decay every bias) is a `tw.NoMatchError` naming
    the atom and the closest paths. `strict=False` allows it.

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
    sel = as_selector(selector)
    if not strict:
        return _pure(tree, leaf_values(tree, sel.compile(), is_leaf))
    rec = Recorder()
    out = leaf_values(tree, rec.compile(sel), is_leaf)
    rec.check(tree, [(None, sel)], call="tw.mask", is_leaf=is_leaf, leaves_only=True)
    return _pure(tree, out)


def labels(
    tree: PyTree,
    spec: Mapping[Any, Any],
    *,
    default: Any = None,
    is_leaf: IsLeaf = None,
    strict: bool = True,
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
    - `strict`: every atom of every selector must match a leaf (as in
      [`tw.mask`][treewalk.mask]): `{"frozen": "dens/**"}` (a typo) is a
      `tw.NoMatchError`, not a silent "freeze nothing". `strict=False` allows it.

    As with `tw.mask`, the labels of an NNX module or `nnx.State` are pure (a label
    where each `Variable` was; the `nnx.Param`s only, from a module, so its batch
    statistics and RNG state need no label), as `nnx.Optimizer` hands optax the
    parameters.

    **Raises:**

    `tw.LabelError` naming the paths (up to five) and the labels involved;
    `tw.NoMatchError` (with `strict`) naming the selector part that matches nothing.

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
    rec = Recorder()
    matchers = [(lab, rec.compile(s) if strict else s.compile()) for lab, s in sels]
    conflicts: list[str] = []
    unlabelled: list[str] = []

    # The labels of an NNX module hold its Params only: other variables (batch
    # statistics, RNG state) need no label.
    params_only = nnx_kind(tree) == "module"

    def leaf(n: Node) -> Any:
        labs = [lab for lab, m in matchers if m(n)]
        if len(labs) == 1:
            return labs[0]
        if params_only and variable_kind(n.outer) == "other":
            return default
        if not labs:
            if default is None:
                unlabelled.append(show_path(n.path))
            return default
        conflicts.append(f"{show_path(n.path)} (labels {', '.join(map(repr, labs))})")
        return labs[0]

    out = leaf_values(tree, leaf, is_leaf)
    if strict:
        rec.check(tree, sels, call="tw.labels", is_leaf=is_leaf, leaves_only=True)
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
    return _pure(tree, out)

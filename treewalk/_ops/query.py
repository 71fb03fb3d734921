"""Queries: select, paths, where, mask, labels — each one pass of the engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._core.engine import Find, Leaves, Pass
from .._core.errors import ArgumentError, LabelError, StructureError, call_user
from .._core.matcher import Matcher
from .._core.node import Hits, Node
from .._core.paths import Path, path_segments, show_path
from .._core.types import IsLeaf, PyTree
from .._frameworks import nnx_kind, nnx_pure, variable_kind
from .._select.algebra import Selector, as_selector, brief
from .._select.strict import Recorder


def find(
    tree: Any,
    sel: Selector | Matcher,
    *,
    is_leaf: IsLeaf = None,
    include_none: bool = False,
    outermost: bool = False,
) -> Hits:
    """The nodes `sel` matches, in pre-order: every match, or with `outermost` only
    those not inside another (the nodes `replace` acts on). `None` only with
    `include_none`."""
    m = sel.compile() if isinstance(sel, Selector) else sel
    mode = Find(m, outermost=outermost, paths_now=True)
    Pass(mode, include_none=include_none, is_leaf=is_leaf, rebuild=False).run(tree)
    return mode.hits


def covered(
    tree: Any,
    m: Matcher,
    at_leaf: Callable[[Node, bool], Any] | None = None,
    *,
    is_leaf: IsLeaf = None,
    rebuild: bool = True,
) -> Any:
    """`tree` with every leaf (looking through boxes) replaced by whether `m` covers it
    (picks it or a node above it: the leaves `replace` would change), or by
    `at_leaf(n, covered)`. One pass; boxes that are pytree nodes (NNX
    `Variable`, linen `Partitioned`) are kept, so the result has the tree's treedef; a
    box that is a leaf (a penzai `Parameter`) gives a leaf, its value's."""
    mode = Leaves(at_leaf, cover=m)
    flat = Pass(mode, is_leaf=is_leaf, rebuild=rebuild, bare_leaf_boxes=True).run(tree)
    return flat.finish() if rebuild else None


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


def lookup(tree: Any, wanted: list[Path], what: str, is_leaf: IsLeaf = None) -> list[Any]:
    """The nodes at `wanted` paths (box entries included) in `tree`, in one pass."""
    index = {path: i for i, path in enumerate(wanted)}
    hits = find(tree, Matcher(lambda n: n.path in index), is_leaf=is_leaf, outermost=True)
    found = dict(zip(hits.paths, hits.nodes, strict=True))
    missing = [p for p in wanted if p not in found]
    if missing:
        raise StructureError(_missing_message(tree, wanted, missing, what, is_leaf))
    return [found[p] for p in wanted]


def _missing_message(
    tree: Any, wanted: list[Path], missing: list[Path], what: str, is_leaf: IsLeaf
) -> str:
    """Why a where-function's paths are not in `tree`: another structure, or the same
    places under other key entries (built on an `nnx.State`, used on the module)."""
    by_segs = {path_segments(p): p for p in find(tree, Matcher(lambda n: True)).paths}
    first = missing[0]
    there = by_segs.get(path_segments(first))
    if there is not None:
        return (
            f"{what}: {len(missing)} of its {len(wanted)} paths are not in the tree it was "
            f"given, e.g. {show_path(first)}: this tree has that place, but under other "
            f"key entries ({_entries(there)} here, {_entries(first)} in the tree the "
            f"where-function was built on: an `nnx.State` holds dict entries where its "
            f"module has attributes). Build the where-function on the tree you pass it: "
            f"`tw.where(model, sel)` for `eqx.tree_at(..., model, ...)`."
        )
    return (
        f"{what}: {len(missing)} of its {len(wanted)} paths are not in the tree it was "
        f"given, e.g. {show_path(first)}. A where-function looks nodes up by the paths it "
        f"found in the tree it was built on: build it on a tree of the same structure as "
        f"the one you pass (`tw.where(model, sel)` for `eqx.tree_at(..., model, ...)`)."
    )


def _entries(path: Path) -> str:
    return "/".join(type(e).__name__ for e in path)


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


def pure(tree: Any, out: Any, wrt: Any) -> Any:
    """A mask or label tree `out` made from `tree` in the form its consumer wants: from an
    NNX module, the pure `nnx.State` of what `nnx.Optimizer(..., wrt=wrt)` optimises (a
    value where each such `Variable` was; `wrt` defaults to `nnx.Param`); from anything
    else, the tree's own structure (an `nnx.State` keeps its boxes), or with `wrt`, the
    pure state of those variables."""
    kind = nnx_kind(tree)
    if kind is None:
        if wrt is not None:
            raise ArgumentError(
                f"wrt= is for NNX modules and `nnx.State`s (the variables nnx.Optimizer "
                f"optimises); this tree is a {type(tree).__name__}. Leave wrt= out."
            )
        return out
    return nnx_pure(out, kind, wrt)


def mask(
    tree: PyTree,
    selector: Any,
    *,
    is_leaf: IsLeaf = None,
    strict: bool = True,
    wrt: Any = None,
) -> PyTree:
    """A pytree of `bool` with `tree`'s structure: `True` exactly at the leaves
    [`tw.replace`][treewalk.replace] would change, those `selector` picks and those inside
    a node it picks.

    So `tw.mask(model, tw.of_type(LayerNorm))` marks every leaf of every `LayerNorm`,
    as `replace` would hand `fn` each whole layer, and `~tw.name("bias")` (a negation
    picks leaves) marks every leaf but the biases. [`tw.show`][treewalk.show] marks the
    same leaves.

    Boxes are kept (a linen `Partitioned` mask holds `Partitioned` bools), so the mask
    has the same treedef as the tree and works with `optax.masked`, `eqx.filter`,
    `eqx.partition` and `jax.tree.map(f, tree, mask)`.

    **NNX.** The mask of an `nnx.State` has the State's structure (its `Variable`s hold
    bools), for `jax.tree.map(f, state, mask)`; the mask of a pure state (`nnx.as_pure(...)`,
    or what optax hands a mask function) is pure. The mask of an NNX *module* is what
    `nnx.Optimizer` hands optax: the pure `nnx.State` of the variables it optimises,
    `nnx.Param`s by default; pass the optimiser's own filter as `wrt=` when it is
    another (`nnx.Optimizer(model, tx, wrt=f)` wants `tw.mask(model, sel, wrt=f)`). The
    selection is made on the module, so `tw.inside(nnx.LayerNorm)` works; an
    `nnx.State` holds no modules, so there select by path (`"**/norm/**"`). Both
    `optax.adamw(..., mask=tw.mask(model, sel))` and `mask=lambda p: tw.mask(p, sel)`
    work with `nnx.Optimizer`.

    **Strict** (default): every atom of the selector (each `tw.name`, glob, regex,
    `tw.of_type`, `tw.inside`) must match at least one node, so a typo such as
    `~tw.name("biass")` (which would decay every bias) is a `tw.NoMatchError` naming
    the atom and the closest paths. `strict=False` allows it. A tree without leaves
    has nothing to miss: its mask is its structure.

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
        assert tw.mask(params, "dense") == {"dense": {"kernel": True, "bias": True}}
        opt = optax.adamw(1e-3, mask=decay)
        ```
    """
    sel = as_selector(selector)
    rec = Recorder() if strict else None
    m = sel.compile(None if rec is None else rec.wrap)
    out = covered(tree, m, is_leaf=is_leaf)
    if rec is not None:
        rec.check(tree, [(None, sel)], call="tw.mask", is_leaf=is_leaf)
    return pure(tree, out, wrt)


def labels(
    tree: PyTree,
    spec: Mapping[Any, Any] | Callable[[Path, Any], Any],
    *,
    default: Any = None,
    is_leaf: IsLeaf = None,
    strict: bool = True,
    wrt: Any = None,
) -> PyTree:
    """A pytree of labels with `tree`'s structure, for `optax.multi_transform`.

    For an Equinox model pass a function, `param_labels=lambda p: tw.labels(p, spec)`:
    the label tree of a model is a `Module`, which `multi_transform` would call.

    Each leaf gets the label whose selector picks it or a node above it (as in
    [`tw.mask`][treewalk.mask]: `{"frozen": "encoder"}` labels every leaf of the
    encoder). A leaf that two labels claim is an error; so is a leaf no label claims
    when `default` is `None`. Or give a function `spec(path, leaf) -> label`, asked at
    every leaf (a label computed from the path, e.g. a learning rate per block).

    **Arguments:**

    - `tree`: the parameters.
    - `spec`: `{label: selector, ...}`, none taking priority (overlaps are errors); or
      `fn(path, leaf) -> label`.
    - `default`: the label of leaves no selector claims.
    - `strict`: every atom of every selector must match a node (as in
      [`tw.mask`][treewalk.mask]): `{"frozen": "dens/**"}` (a typo) is a
      `tw.NoMatchError`, not a silent "freeze nothing". `strict=False` allows it.
    - `wrt`: as in [`tw.mask`][treewalk.mask], the filter of `nnx.Optimizer(wrt=...)`.

    As with `tw.mask`, the labels of an NNX module are pure, for the variables
    `nnx.Optimizer` optimises (its batch statistics and RNG state need no label), and the
    labels of an `nnx.State` have its structure.

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
        by_name = tw.labels(params, lambda path, leaf: tw.path_str(path).split("/")[-1])
        assert by_name == {"dense": {"kernel": "kernel", "bias": "bias"}}
        ```
    """
    # The labels of an NNX module hold its optimised variables only: the others (batch
    # statistics, RNG state) need no label.
    params_only = nnx_kind(tree) == "module" and wrt is None
    if callable(spec) and not isinstance(spec, Mapping):
        fn = spec

        def by_fn(n: Node, _: Any) -> Any:
            if params_only and variable_kind(n.outer) == "other":
                return default
            return call_user("the labels function", fn, n.path, n.path, n.node)

        out = Pass(Leaves(by_fn), is_leaf=is_leaf, bare_leaf_boxes=True).run(tree).finish()
        return pure(tree, out, wrt)
    if not isinstance(spec, Mapping) or not spec:
        raise LabelError(
            f"labels takes a non-empty mapping {{label: selector}} or a function "
            f"(path, leaf) -> label; got {type(spec).__name__}. For example "
            f"tw.labels(params, {{'decay': '**/kernel', 'no_decay': '**/bias'}})."
        )
    sels = [
        (lab, as_selector(s, what=f"the selector of label {lab!r}")) for lab, s in spec.items()
    ]
    rec = Recorder() if strict else None
    wrap = None if rec is None else rec.wrap
    matchers = [(lab, s.compile(wrap)) for lab, s in sels]
    conflicts: list[str] = []
    unlabelled: list[str] = []

    def at_node(n: Node, above: tuple[Any, ...]) -> tuple[Any, ...]:
        # The labels that cover this node's subtree: those above, and those picking it.
        new = tuple(lab for lab, m in matchers if lab not in above and m(n))
        return (*above, *new) if new else above

    def at_leaf(n: Node, above: tuple[Any, ...]) -> Any:
        labs = list(above) + [lab for lab, m in matchers if lab not in above and m(n)]
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

    mode = Leaves(at_leaf, at_node, top=())
    out = Pass(mode, is_leaf=is_leaf, bare_leaf_boxes=True).run(tree).finish()
    if rec is not None:
        rec.check(tree, sels, call="tw.labels", is_leaf=is_leaf)
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
    return pure(tree, out, wrt)

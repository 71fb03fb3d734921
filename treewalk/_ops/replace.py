"""The primitive: replace(tree, selector, fn(path, node, key))."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from .._core.align import MISSING, Aligned
from .._core.engine import Copy, Find, Pass
from .._core.errors import ArgumentError, StructureError, check_callable
from .._core.kinds import ARRAY_TYPES, LEAF, flags_of
from .._core.node import Hits
from .._core.paths import path_segments, segment, show_path
from .._core.rebuild import ready
from .._core.types import PyTree, ReplaceFn
from .._frameworks import registry
from .._select.algebra import as_selector, brief
from .._select.strict import Recorder, check_selects
from .results import check_fn, results


def replace(
    tree: PyTree,
    selector: Any,
    fn: ReplaceFn,
    *rest: PyTree,
    key: Any = None,
    key_policy: Literal["path", "split"] = "path",
    is_leaf: Callable[[Any], bool] | None = None,
    strict: bool = True,
    check: bool = True,
    include_none: bool = False,
) -> PyTree:
    """A new tree in which every node `selector` picks is replaced by `fn(path, node, key)`.

    This one call re-initialises weights, zeroes biases, masks, freezes and performs model
    surgery, on any pytree: Equinox modules, Flax NNX modules and `nnx.State`, linen and
    Haiku param dicts, penzai models, plain containers and custom nodes.

    **Arguments:**

    - `tree`: the pytree. It is never mutated (an NNX module passed in stays as it was).
    - `selector`: which nodes: a selector, or a glob `str`, a class, or a
      `(path, node) -> bool` callable.
    - `fn`: `fn(path, node, key) -> new node`, called once per selected node.
      `tw.zeros`, `tw.ones`, `tw.constant(v)`, `tw.initializer(init)` and everything in
      `tw.init` fit here.
    - `*rest`: other trees to read from: `fn` is called as `fn(path, node, key,
      *rest_nodes)`, with the node at the same path in each (an EMA:
      `lambda p, ema, k, new: 0.99 * ema + 0.01 * new`). Trees are aligned by path
      segments, not by treedef: a tree in `rest` may be another framework's container
      of the same names (an NNX `State` beside its module, a dict beside an Equinox
      model) and may hold more. Boxes are opened in every tree alike. A selected path
      that a tree in `rest` lacks, or holds as an array of another shape (with `check`),
      is a `tw.StructureError` naming the path and the tree. The helpers and `tw.init`
      take no extra nodes: they draw as with one tree.
    - `key`: a PRNG key (`jax.random.key(0)`, or a legacy `uint32[2]` key). Without it
      `fn` gets `key=None`; with it every selected node gets its own independent key, of
      the same kind as the one passed.
    - `key_policy`: how the per-node keys are made. `"path"` (default): from the root key and a
      stable hash of the node's path segments, so a node's key depends only on its path:
      adding a layer or changing the selector changes no other node's values. `"split"`:
      `jax.random.split(key, n)` handed out in traversal order (optax's
      `tree_split_key_like`).
    - `is_leaf`: as in JAX.
    - `strict`: every atom of the selector (each `tw.name`, glob, regex, `tw.of_type`,
      `tw.inside`, through `&`, `|`, `~`) must match at least one node, and the selector
      must select something; otherwise a `tw.NoMatchError` names the dead atom and the
      paths that come closest. `tw.name("weight", "kernel")` is alive when either name
      matches. Pass `strict=False` to allow it (nothing selected: the tree unchanged).
    - `check`: an array leaf must be replaced by an array of the same shape and dtype
      (`tw.ReplacementError` otherwise). A `jax.ShapeDtypeStruct` may become an array.
    - `include_none`: also select `None` nodes (absent optional arrays, e.g. the bias of
      `eqx.nn.Linear(use_bias=False)`), so that `fn` can put an array there.

    **Semantics worth knowing:**

    - *Boxes.* Values inside NNX `Variable`s, linen `Partitioned`/`LogicallyPartitioned`
      and penzai `Parameter`s are seen bare by selectors and `fn`; the box is rebuilt
      around the result with all its metadata (sharding names included).
    - *Nesting.* When a selected node is inside another selected node, the outermost wins:
      `fn` gets the outer node and the walk does not descend into it.
    - *Tied weights.* An array object reached by several selected paths is passed to `fn`
      once (with the first path and its key); every place gets the same new array, so
      the tie survives.
    - *Keys.* A key is made only for nodes `fn` is called on: never for `None`, nor for the
      second path of a tie.
    - *Batching.* `fn`s that know how to draw many same-shape leaves at once (the helpers
      and `tw.init`) are called once per distinct shape and dtype, not once per leaf;
      the values are the same as leaf-by-leaf calls.
    - *Shardings.* A new leaf gets the sharding of the leaf it replaces, eagerly and
      under `jax.jit` (see the sharding guide); unselected leaves are returned as they
      are. Sharded leaves are batched only with leaves of the same layout, never gathered.
      To create a model directly in its shardings, see `tw.materialize`.

    **Returns:**

    The new tree. Its containers are always new objects (one unflatten rebuilds them),
    NNX modules and variables included; leaves that were not replaced are the input's
    own arrays (nothing is copied). `fn` gets the input's node, except that mutable
    objects inside a selected layer (NNX modules and variables) are copies: an in-place
    edit never reaches the input. A mutable object shared by several paths stays shared.

    **Raises:**

    `tw.NoMatchError`, `tw.ReplacementError`, `tw.CallbackError` (when `fn` raises; it
    names the path and chains the original), `tw.ArgumentError`, `tw.PRNGKeyError`.

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import treewalk as tw

        mlp = eqx.nn.MLP(4, 2, 32, 2, key=jax.random.key(0))
        mlp = tw.replace(mlp, "**/bias", tw.zeros)
        mlp = tw.replace(mlp, "**/weight", tw.initializer(jax.nn.initializers.lecun_normal()),
                         key=jax.random.key(1))
        assert all((layer.bias == 0).all() for layer in mlp.layers)
        ```
    """
    sel = as_selector(selector)
    check_callable("fn", fn, hint="lambda path, node, key: node")
    check_fn(fn, len(rest))
    if key_policy not in ("path", "split"):
        raise ArgumentError(f"key_policy= must be 'path' or 'split'; got {key_policy!r}.")
    if key is None and getattr(fn, "needs_key", False):
        raise ArgumentError(
            f"{fn!r} draws random values and needs a key: pass key=jax.random.key(0) to "
            f"tw.replace (selector {brief(sel)})."
        )
    rec = Recorder() if strict else None
    m = sel.compile(None if rec is None else rec.wrap)
    # An `fn` with context (`tw_call`, `tw_signature`, `tw_batched`) gets `Node`s, whose
    # `parent` it may read (`tw.init` finds a bias's layer so).
    context = any(hasattr(fn, a) for a in ("tw_call", "tw_signature", "tw_batched"))
    find = Find(m, keep_parents=context)
    p = Pass(find, include_none=include_none, is_leaf=is_leaf)
    flat = p.run(tree)
    hits = find.hits
    if rec is not None:
        where = {"call": "tw.replace", "is_leaf": is_leaf, "include_none": include_none}
        rec.check(tree, [(None, sel)], **where)
        if not hits:
            check_selects(tree, sel, **where)
    if not hits:
        return flat.finish()
    if registry.mutable or registry.leaf_boxes:
        _private_hits(hits, p, is_leaf)
    others = aligned(hits, rest, sel, check, is_leaf) if rest else None
    return flat.finish(results(hits, fn, key, key_policy, sel, check, others))


def aligned(
    hits: Hits, rest: tuple[Any, ...], sel: Any, check: bool, is_leaf: Any
) -> list[list[Any]]:
    """For each tree of `rest`, its node at each hit's path (copies of its mutable
    objects, as `fn` gets for `tree`): `columns[t][i]`."""
    columns: list[list[Any]] = []  # one per tree of `rest`
    bases, entries, nodes = hits.bases, hits.entries, hits.nodes
    mutable = registry.mutable
    for t, other in enumerate(rest):
        column: list[Any] = []
        columns.append(column)
        found = Aligned(other)
        parents: dict[int, Any] = {}  # siblings share their base path: looked up once
        for i in range(len(hits)):
            base, e = bases[i], entries[i]
            if e is None:
                node = found.at(path_segments(base))
            else:
                parent = parents.get(id(base))
                if parent is None:
                    parent = parents[id(base)] = found.at(path_segments(base))
                seg = segment(e)
                if parent is MISSING or seg is None:  # a box's value: the box, opened
                    node = parent
                else:
                    node = found.child(parent, seg)
            if node is MISSING:
                raise StructureError(
                    f"tw.replace: the selected path {show_path(hits.path(i))} is not in "
                    f"rest[{t}] (selector {brief(sel)}); the trees after fn are aligned "
                    "by path: give them the paths the first tree's selection has."
                )
            mine = nodes[i]
            if check and isinstance(mine, ARRAY_TYPES) and isinstance(node, ARRAY_TYPES):
                if tuple(node.shape) != tuple(mine.shape):
                    _shape_error(hits, i, t, node, sel)
            if mutable and not flags_of(node) & LEAF:
                node = Pass(Copy(), is_leaf=is_leaf).run(node).finish()
            column.append(node)
    return columns


def _shape_error(hits: Hits, i: int, t: int, node: Any, sel: Any) -> None:
    """Tree `t` of `rest` holds at hit `i` an array of another shape than the tree's."""
    raise StructureError(
        f"tw.replace: at {show_path(hits.path(i))}, rest[{t}] holds an array of shape "
        f"{tuple(node.shape)}, the tree one of {tuple(hits.nodes[i].shape)} (selector "
        f"{brief(sel)}); pass check=False if that is intended."
    )


def _private_hits(hits: Hits, p: Pass, is_leaf: Any) -> None:
    """Give `fn` copies of the mutable objects inside selected layers (consistent with the
    rest of the output: a variable shared with an unselected layer is the same copy)."""
    # What is known without the results (a variable met outside the selected layers).
    done = {k: v for k, v in p.done.items() if ready(v)}
    nodes = hits.nodes
    for i, node in enumerate(nodes):
        if not flags_of(node) & LEAF and node is not None:
            copy = Pass(Copy(), is_leaf=is_leaf, done=done)
            flat = copy.run(node)
            if copy.met_shared:
                nodes[i] = flat.finish()

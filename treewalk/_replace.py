"""The primitive: replace(tree, selector, fn(path, node, key))."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Literal

import jax
import numpy as np
from jax.core import Tracer
from jax.sharding import SingleDeviceSharding
from jaxtyping import PyTree

from ._errors import ArgumentError, NoMatchError, ReplacementError
from ._fast import (
    fast_matches,
    fast_types,
    leaves_hold_all,
    path_matcher,
    path_only,
    plain_leaves,
    rebuild_by_paths,
)
from ._frameworks import registry
from ._helpers import _place, constrain, eager, stack_sharding
from ._keys import as_typed_key, path_keys, split_keys
from ._path import Path, path_str, show_path
from ._scan import matches, scan
from ._selectors import ARRAY_TYPES, Node, Selector, arrays, as_selector, is_array_type
from ._walk import (
    LEAF,
    SHARED,
    Stop,
    Walk,
    _call,
    check_callable,
    no_gc,
    type_kinds,
    wrapped,
)

ReplaceFn = Callable[[Path, Any, Any], Any]


def replace(
    tree: PyTree,
    selector: Any,
    fn: ReplaceFn,
    *,
    key: Any = None,
    keys: Literal["path", "split"] = "path",
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
    - `key`: a PRNG key (`jax.random.key(0)`, or a legacy `uint32[2]` key). Without it
      `fn` gets `key=None`; with it every selected node gets its own independent key, of
      the same kind as the one passed.
    - `keys`: how the per-node keys are made. `"path"` (default): from the root key and a
      stable hash of the node's path segments, so a node's key depends only on its path:
      adding a layer or changing the selector changes no other node's values. `"split"`:
      `jax.random.split(key, n)` handed out in traversal order (optax's
      `tree_split_key_like`).
    - `is_leaf`: as in JAX.
    - `strict`: a selector that matches nothing is an error (`tw.NoMatchError`) listing
      the paths that come closest. Pass `strict=False` to return the tree unchanged.
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

    The new tree. Leaves that were not replaced are the input's own objects (no array is
    copied); containers may be new objects (one C++ unflatten rebuilds them all), and NNX
    modules and variables are always copied. When `fn` returns every selected node as it
    was, the result is the input itself.

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
    check_callable("fn", fn)
    if keys not in ("path", "split"):
        raise ArgumentError(f"keys= must be 'path' or 'split'; got {keys!r}.")
    if key is None and getattr(fn, "needs_key", False):
        raise ArgumentError(
            f"{fn!r} draws random values and needs a key: pass key=jax.random.key(0) to "
            f"tw.replace (selector {sel!r})."
        )
    two_pass = key is not None or getattr(fn, "tw_batched", None) is not None
    # The walk is needed for `None`s (a flatten drops them) and for fns that ask for the
    # node's context; otherwise C++ flattens find the nodes (see `_fast`).
    flat_ok = not include_none and not hasattr(fn, "tw_call")
    fast = fast_types(sel, arrays_ok=True) if flat_ok else None
    done = None
    arrays_only = fast is not None and all(is_array_type[t] for t in fast)
    if arrays_only or (flat_ok and path_only(sel)):
        with no_gc():
            done = _replace_leaves(tree, sel, fn, key, keys, is_leaf, check, arrays_only)
        if done is None and not two_pass:
            fast = None  # boxes or NNX modules: one walk costs less than two flattens
    if done is not None:
        out, count = done
    elif fast is not None:
        out, count = _replace_fast(tree, sel, fast, fn, key, keys, is_leaf, check)
    elif not two_pass:
        out, count = _replace_one_pass(tree, sel, fn, is_leaf, check, include_none)
    else:
        out, count = _replace_two_pass(tree, sel, fn, key, keys, is_leaf, check, include_none)
    if count == 0 and strict:
        raise NoMatchError(_no_match_message(tree, sel, is_leaf))
    return out


class _Apply:
    """Calls `fn` for one selected node, with tie handling and the shape/dtype check."""

    __slots__ = ("fn", "sel", "check", "ties", "what", "kinds", "copy_mutables")

    def __init__(self, fn: ReplaceFn, sel: Selector, check: bool) -> None:
        self.fn, self.sel, self.check = fn, sel, check
        self.ties: dict[int, Any] = {}
        # Decided once per call, not per selected node: the per-node loop stays lean.
        name = repr(fn) if hasattr(fn, "tw_call") else "fn"
        self.what = f"{name} (selector {sel!r})"
        self.kinds = type_kinds()
        self.copy_mutables = bool(registry.mutable or registry.leaf_boxes)

    def __call__(self, n: Node, key: Any) -> Any:
        fn = self.fn
        if self.copy_mutables:
            f = self.kinds[type(n.node)]
            if f & SHARED or not (f & LEAF or n.node is None):
                # fn gets a copy of a layer that holds mutable objects (an NNX module, a
                # penzai layer with Parameters), so an in-place edit leaves the input as it is.
                n = Node(n.path, Walk(transparent=True)(n.node), n.outer, n.parent)
        tw_call = getattr(fn, "tw_call", None)
        if tw_call is not None:
            new = _call(self.what, tw_call, n.path, n, key)
        else:
            new = _call(self.what, fn, n.path, n.path, n.node, key)
        return fit(n.path, n.node, new, self.sel, self.check)


def fit(path: Path, old: Any, new: Any, sel: Selector, check: bool) -> Any:
    """`new`, which `fn` returned for `old`, checked (with `check`) and placed where `old`
    lives. Eager arrays on one device, the common case, take two type tests and an aval
    comparison."""
    if eager[type(old)] and eager[type(new)] and type(old.sharding) is SingleDeviceSharding:
        if check and new.aval != old.aval:
            check_replacement(Node(path, old, None, None), new, sel)
        return new
    if check:
        check_replacement(Node(path, old, None, None), new, sel)
    return _place(new, old)


def check_replacement(n: Node, new: Any, sel: Selector) -> None:
    old = n.node
    if not isinstance(old, ARRAY_TYPES):
        return
    shape, dtype = getattr(new, "shape", None), getattr(new, "dtype", None)
    if shape is None or dtype is None:
        raise ReplacementError(
            f"fn (selector {sel!r}) replaced the array at {show_path(n.path)} "
            f"(shape {tuple(old.shape)}, dtype {old.dtype}) with a {type(new).__name__}. "
            f"Return an array, or pass check=False if the change is intended."
        )
    if tuple(shape) != tuple(old.shape) or dtype != old.dtype:
        raise ReplacementError(
            f"fn (selector {sel!r}) changed the array at {show_path(n.path)} from "
            f"shape {tuple(old.shape)}, dtype {old.dtype} to shape {tuple(shape)}, dtype "
            f"{dtype}. Return an array of the same shape and dtype (e.g. "
            f"`.astype(x.dtype)`), or pass check=False if the change is intended."
        )


def _is_array(x: Any) -> bool:
    """Can `x` be a tied weight? Arrays (concrete or traced) can; a `ShapeDtypeStruct` is
    only a description, and one object may describe many leaves."""
    return is_array_type[type(x)] and type(x) is not jax.ShapeDtypeStruct


def _replace_one_pass(
    tree: Any, sel: Selector, fn: ReplaceFn, is_leaf: Any, check: bool, include_none: bool
) -> tuple[Any, int]:
    apply = _Apply(fn, sel, check)
    ties = apply.ties
    count = 0
    match = sel.match

    def visit(n: Node) -> Any:
        nonlocal count
        node = n.node
        if (node is None and not include_none) or not match(n):
            return node
        count += 1
        if _is_array(node):
            i = id(node)
            if i in ties:
                return Stop(ties[i])
            new = ties[i] = apply(n, None)
            return Stop(new)
        return Stop(apply(n, None))

    out = scan(visit, is_leaf=is_leaf, rebuild=True)(tree)
    return out, count


def _replace_two_pass(
    tree: Any,
    sel: Selector,
    fn: ReplaceFn,
    key: Any,
    policy: str,
    is_leaf: Any,
    check: bool,
    include_none: bool,
) -> tuple[Any, int]:
    # Pass 1: find the selected nodes and the order in which the rebuild will meet them.
    hits: list[Node] = []
    visits: list[int] = []
    counter = 0

    def visit(n: Node) -> Any:
        nonlocal counter
        counter += 1
        node = n.node
        if (node is not None or include_none) and sel.match(n):
            hits.append(n)
            visits.append(counter)
            return Stop(node)
        return node

    scan(visit, is_leaf=is_leaf)(tree)
    if not hits:
        return tree, 0
    new = _results(hits, fn, key, policy, sel, check)

    # Pass 2: rebuild, meeting the selected nodes at the same visit numbers.
    it = iter(zip(visits, new, strict=True))
    nxt = next(it)
    counter = 0

    def pre(path: Path, node: Any, ctx: Any) -> Any:
        nonlocal counter, nxt
        counter += 1
        if counter == nxt[0]:
            out = nxt[1]
            nxt = next(it, (0, None))
            return Stop(out)
        return node, ctx

    out = Walk(pre, is_leaf=is_leaf, transparent=True)(tree)
    return out, len(hits)


def _replace_leaves(
    tree: Any,
    sel: Selector,
    fn: ReplaceFn,
    key: Any,
    policy: str,
    is_leaf: Any,
    check: bool,
    arrays_only: bool,
) -> tuple[Any, int] | None:
    """On a plain tree, when only leaves can be selected: one C++ flatten with paths, `fn`
    on each selected leaf, one unflatten (none at all when `fn` returned every leaf as it
    was). `None` when the walk is needed instead: the tree holds a box or a mutable node,
    or a path selector (not `arrays_only`) picks an internal node or the tree has nodes
    with no leaves (`None`, empty containers), which a flatten does not show."""
    flat = plain_leaves(tree, is_leaf)
    if flat is None:
        return None
    leaves, treedef = flat
    by_path = None if arrays_only else path_matcher(sel)
    if by_path is not None and not leaves_hold_all(leaves, treedef, by_path):
        return None
    match = None if sel is arrays or by_path is not None else sel.match
    array_type = is_array_type
    candidate = array_type if arrays_only else _not_none
    if key is None and getattr(fn, "tw_batched", None) is None:
        # One pass: fn right away, ties computed once. `_Apply`'s work inlined but for
        # `fit`: on 100,000 leaves its calls cost as much as the flatten.
        what = f"fn (selector {sel!r})"
        ties: dict[int, Any] = {}
        count = 0
        values: list[Any] | None = None  # made on the first change
        sds = jax.ShapeDtypeStruct
        for i, (path, x) in enumerate(leaves):
            t = type(x)
            if not candidate[t]:
                continue
            if by_path is not None:
                if not by_path(path):
                    continue
            elif match is not None and not match(Node(path, x, None, None)):
                continue
            count += 1
            # Ties are arrays only; a ShapeDtypeStruct may describe many leaves.
            tie = id(x) if array_type[t] and t is not sds else None
            if tie in ties:
                new = ties[tie]
            else:
                try:
                    new = fn(path, x, None)
                except Exception as e:
                    raise wrapped(what, path, e) from e
                if new is not x:
                    new = fit(path, x, new, sel, check)
                if tie is not None:
                    ties[tie] = new
            if new is not x:
                if values is None:
                    values = list(map(itemgetter(1), leaves))
                values[i] = new
        return (tree if values is None else treedef.unflatten(values)), count
    # Keys or a batched fn: collect the selected leaves, compute all results, then place.
    hits: list[Node] = []
    where: list[int] = []
    for i, (path, x) in enumerate(leaves):
        if candidate[type(x)]:
            n = Node(path, x, None, None)
            if by_path(path) if by_path is not None else match is None or match(n):
                hits.append(n)
                where.append(i)
    if not hits:
        return tree, 0
    values = list(map(itemgetter(1), leaves))
    for i, new in zip(where, _results(hits, fn, key, policy, sel, check), strict=True):
        values[i] = new
    return treedef.unflatten(values), len(hits)


class _NotNone(dict[type, bool]):
    def __missing__(self, t: type) -> bool:
        hit = self[t] = t is not type(None)
        return hit


#: `_not_none[type(x)]`: may leaf `x` be selected by a path selector? (`None` never is.)
_not_none = _NotNone()


def _replace_fast(
    tree: Any,
    sel: Selector,
    types: tuple[type, ...],
    fn: ReplaceFn,
    key: Any,
    policy: str,
    is_leaf: Any,
    check: bool,
) -> tuple[Any, int]:
    """For selectors that can only match known types: candidates found in C++ (see _fast)."""
    hits = fast_matches(tree, sel, types, is_leaf=is_leaf, outermost=True)
    if not hits:
        return tree, 0
    new = _results(hits, fn, key, policy, sel, check)
    out = rebuild_by_paths(
        tree, types, is_leaf, {n.path: x for n, x in zip(hits, new, strict=True)}
    )
    return out, len(hits)


def _results(
    hits: list[Node], fn: ReplaceFn, key: Any, policy: str, sel: Selector, check: bool
) -> list[Any]:
    """`fn`'s result for each selected node: ties computed once, keys derived at once."""
    # Ties: the same array object at several selected paths is computed once.
    first: dict[int, int] = {}
    owner = list(range(len(hits)))
    for i, n in enumerate(hits):
        if _is_array(n.node):
            owner[i] = first.setdefault(id(n.node), i)
    todo = [i for i in range(len(hits)) if owner[i] == i]

    # Keys, one vectorised derivation for all of them.
    legacy = False
    key_arr = None
    if key is not None:
        typed, legacy = as_typed_key(key)
        if policy == "path":
            key_arr = path_keys(typed, [hits[i].segs for i in todo])
        else:
            key_arr = split_keys(typed, len(todo))

    results = _compute(hits, todo, key_arr, legacy, fn, sel, check)
    return [results[owner[i]] for i in range(len(hits))]


def _compute(
    hits: list[Node],
    todo: list[int],
    key_arr: Any,
    legacy: bool,
    fn: ReplaceFn,
    sel: Selector,
    check: bool,
) -> dict[int, Any]:
    """`fn`'s result for every node in `todo`, batched by shape and dtype where `fn` can."""
    apply = _Apply(fn, sel, check)
    results: dict[int, Any] = {}
    batched = getattr(fn, "tw_batched", None)
    rest = list(range(len(todo)))  # positions in todo (and in key_arr)
    if batched is not None:
        signature = getattr(fn, "tw_signature", batch_signature)
        what = f"{fn!r} (selector {sel!r})"
        groups: dict[Any, list[int]] = {}
        traced = isinstance(key_arr, Tracer)
        for j, i in enumerate(todo):
            if _size(hits[i].node) > STACK_MAX:
                continue  # big leaves are drawn one by one: a stack would double the peak
            sig = _call(what, signature, hits[i].path, hits[i])
            if sig is not None:
                # Sharded leaves are stacked only with leaves of the same layout.
                ok, layout = stack_sharding(hits[i].node, traced)
                if ok:
                    groups.setdefault((sig, layout), []).append(j)
        grouped: set[int] = set()
        for (sig, layout), js in groups.items():
            if len(js) < 2:
                continue
            grouped.update(js)
            ks = None
            if key_arr is not None:
                contiguous = js[-1] - js[0] + 1 == len(js)
                ks = key_arr[js[0] : js[-1] + 1] if contiguous else key_arr[np.asarray(js)]
            nodes = [hits[todo[j]] for j in js]
            stacked = _call(what, batched, nodes[0].path, nodes, ks, sig)
            if layout is not None:
                stacked = constrain(stacked, layout)
            for j, value in zip(js, list(stacked), strict=True):
                results[todo[j]] = _place(value, hits[todo[j]].node)
        rest = [j for j in range(len(todo)) if j not in grouped]
    if rest:
        key_list: list[Any] = [None] * len(todo)
        if key_arr is not None:
            ks = key_arr if len(rest) == len(todo) else key_arr[np.asarray(rest)]
            if legacy:
                ks = jax.random.key_data(ks)
            for j, k in zip(rest, list(ks), strict=True):
                key_list[j] = k
        for j in rest:
            i = todo[j]
            results[i] = apply(hits[i], key_list[j])
    return results


#: Leaves with more elements than this are never stacked. Stacking saves one dispatch
#: (~50 us) per leaf, which only matters for small leaves, and a stack of big leaves
#: costs its own size again in memory (the stack, then its slices): materialising a 1 GB
#: model of 32 big leaves peaked at 4x the model's bytes with stacking, ~1x without.
STACK_MAX = 1 << 16


def _size(node: Any) -> int:
    size = getattr(node, "size", None)
    if size is None:
        return 0
    return int(size)


def batch_signature(n: Node) -> tuple[Any, Any] | None:
    """`(shape, dtype)` if the node can be drawn in a batch with others like it, else `None`.

    Whether a node spread over several devices may be stacked, and how, is decided apart
    from the signature (`stack_sharding`): stacking must never gather it.
    """
    node = n.node
    if not isinstance(node, ARRAY_TYPES):
        return None
    return tuple(node.shape), node.dtype


def _no_match_message(tree: Any, sel: Selector, is_leaf: Any) -> str:
    from ._selectors import everything, glob

    nodes = [n for n in matches(tree, everything, is_leaf=is_leaf) if n.path]
    all_paths = list(dict.fromkeys(path_str(n.path) for n in nodes))
    target = repr(sel)
    for q in ("glob(", "regex(", "name("):
        if target.startswith(q):
            target = target[len(q) :].strip(")'\"")
    close = difflib.get_close_matches(target, all_paths, n=5, cutoff=0.0)
    shown = ", ".join(repr(p) for p in close) if close else "(the tree has no paths)"
    hint = ""
    if isinstance(sel, glob) and isinstance(sel.pattern, str):
        # A key holding '/' (Haiku's 'mlp/~/linear_0') is ONE segment: the glob's '/' split it.
        for n in nodes:
            segs = n.segs
            if any("/" in str(x) for x in segs) and fnmatch.fnmatchcase(path_str(n.path), target):
                tup = tuple(str(x) for x in segs)
                hint = (
                    f" The key of {path_str(n.path)!r} holds '/', so it is one segment and "
                    f"a glob string splits it: pass a tuple of segment patterns instead, "
                    f"tw.glob({tup!r}), or match the key with '*' ('*/{tup[-1]}')."
                )
                break
    return (
        f"selector {sel!r} matched nothing ({len(all_paths)} paths in the tree). "
        f"Closest paths: {shown}.{hint} Fix the selector (globs are anchored at the root: "
        f"'**/bias' is any bias, 'bias' only a top-level one), or pass strict=False to "
        f"allow an empty selection."
    )

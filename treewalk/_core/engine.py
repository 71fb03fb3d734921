"""The one traversal under every treewalk call.

A pass over a tree is one C++ `tree_flatten` whose `is_leaf` (called on every node in
pre-order) is `at` in `Pass.walk` below. Each node's key path is built there from its
parent's and the entries `children.ChildKeys` gives (as JAX's path flatten has them,
without its per-node objects; a leaf's only when something asks for it). There, and only
there, the rules are applied:

- **Boxes** (NNX `Variable`, linen `Partitioned`, penzai `Parameter`; see `_frameworks`)
  are opened: the value inside is visited at the box's path plus a `BoxKey`, and the box
  is rebuilt around the result with its metadata. In `boxes="visit"` mode (the walks)
  the box is visited as a node first.
- **Shared mutable objects** (NNX modules and variables, penzai parameters) are visited
  once: met again, they are not visited again and come out as the same object as the
  first time (ties kept). Every mutable object in the result is a new one.
- **Hidden children** (NNX's `_pytree__state`) and **excluded** subtrees are kept as
  they are and shown to nobody.
- **`None`**, empty containers and static nodes are internal nodes without children, as
  JAX has them: visible, never leaves, kept in place.
- `is_leaf` nodes are leaves.

Every node that is not descended into becomes one leaf of the flatten and one entry of
`Flat.values`, in order, so one `treedef.unflatten` puts results back. The callers decide,
through `visit(n) -> action`, which nodes are hits and whether the pass goes into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from .._frameworks import is_hidden, registry, unbox
from .children import ChildKeys
from .errors import call_user, check_callable
from .kinds import (
    BOX,
    LEAF,
    LEAF_BOX,
    MUTABLE,
    SHARED,
    SPECIAL,
    child_kinds,
    flags_of,
    type_kinds,
)
from .node import Hits, Node
from .paths import BoxKey, Path
from .rebuild import LATE, Boxed, Flat, Ref
from .rebuild import ready as ready  # for `replace`, which copies with what is known

_LEAF = jax.tree_util.tree_structure(0)  # the treedef of a lone leaf

# ---------------------------------------------------------------------- what `visit` returns

GO = 0  #: not a hit: go into the node (a leaf stays as it is)
KEEP = 1  #: not a hit: keep the node as it is, do not go into it
HIT = 2  #: a hit: do not go into it (its value is decided later, or by `leaf`)
HIT_GO = 3  #: a hit, and go into it too (every match, not only the outermost)


class Pass:
    """One traversal of one tree.

    - `visit(n) -> action` is called on every visible node, in pre-order (the root
      first). It may set `n.node` to another value: the pass then goes into that value
      instead (this is how `prewalk` descends into what `fn` returned).
    - `leaf(n) -> value` gives the output of a visible leaf that is not a hit (default:
      the leaf itself). Masks use it.
    - `boxes="open"`: a box is not a node, its value is (queries, `replace`);
      `"visit"`: the box is visited too, then its value (the walks).
    - `rebuild`: build the values at all (a query only needs the hits).
    - `done`: the outputs of the shared mutable objects met so far; pass another pass's
      to copy a subtree consistently with it.
    - `select`, `outermost`, `include_none`: instead of `visit`, a matcher: a node it
      matches is a hit (`None` only with `include_none`), the pass goes into it unless
      `outermost`. (The same as the `visit` that says so, one call less per node.)
    - `bare_leaf_boxes`: a box that is a JAX leaf (a penzai `Parameter`) gives the value
      made of its content, not a new box around it (masks: a leaf for a leaf).

    - `keep_parents`: keep each hit's parent `Node` (for an `fn` that reads `n.parent`).

    `run(tree)` returns the top `Flat`; `hits` holds the hits in pre-order (a `Hits`),
    and `flat.finish(results)` rebuilds the tree with `results[i]` at hit `i`.
    """

    def __init__(
        self,
        visit: Callable[[Node], int] | None = None,
        *,
        leaf: Callable[[Node], Any] | None = None,
        is_leaf: Callable[[Any], bool] | None = None,
        exclude: Callable[[Path, Any], bool] | None = None,
        boxes: str = "open",
        rebuild: bool = True,
        done: dict[int, Any] | None = None,
        bare_leaf_boxes: bool = False,
        select: Callable[[Node], bool] | None = None,
        outermost: bool = True,
        include_none: bool = False,
        keep_parents: bool = False,
    ) -> None:
        check_callable("is_leaf", is_leaf, optional=True, hint="lambda node: ...")
        check_callable("exclude", exclude, optional=True, hint="lambda path, node: ...")
        self.visit, self.leaf = visit, leaf
        self.select, self.include_none = select, include_none
        self.hit_action = HIT if outermost else HIT_GO
        self.is_leaf, self.exclude = is_leaf, exclude
        self.visit_boxes = boxes == "visit"
        self.bare_leaf_boxes = bare_leaf_boxes
        self.rebuild = rebuild
        self.kinds = type_kinds()
        self.pytree_boxes = registry.pytree_boxes
        self.hits = Hits(keep_parents)
        self.child_keys = ChildKeys(child_kinds)
        self.done: dict[int, Any] = {} if done is None else done
        self.met_shared = False  # did the pass meet a shared mutable object?

    def flags(self, x: Any) -> int:
        return flags_of(x)

    def run(self, tree: Any) -> Flat:
        return self.walk((), tree, None, None, False)

    def walk(self, prefix: Path, x: Any, parent: Node | None, outer: Any, inner: bool) -> Flat:
        """One flatten of `x` (the tree, a mutable node's children, a box's value) at path
        `prefix`. `inner`: `x` itself was visited already (`parent` is its Node), only what
        is below it is. `outer`: the box `x` was taken out of."""
        flat = Flat()
        values, pending = flat.values, flat.pending
        kinds_get, learn = self.kinds.get, self.kinds.learn
        visit, leaf, child_keys = self.visit, self.leaf, self.child_keys
        select, include_none = self.select, self.include_none
        memo = getattr(select, "last_memo", None)
        memo_get = None if memo is None else memo.get
        types = getattr(select, "type_memo", None)
        type_get = None if types is None else types.get
        outermost = self.hit_action == HIT
        is_leaf, exclude = self.is_leaf, self.exclude
        rebuild, hits, done = self.rebuild, self.hits, self.done
        # A query (no rebuild) returns its hits' paths: made at the hit. Kept as parent
        # path and entry, the parents' paths would outlive the pass for the GC to scan.
        whole_paths = not rebuild
        hit, outers, hit_parents = hits.add, hits.outers, hits.parents
        hit_nodes = hits.nodes
        hit_base, hit_entry, hit_node = hits.bases.append, hits.entries.append, hit_nodes.append
        slot, slot_hit = flat.slots.append, flat.slot_hits.append
        late, append = self._late, values.append
        # The last key entries of the nodes the flatten will call `at` on, the next one
        # last (the stack of a pre-order traversal, in step with JAX's), and their
        # parents' Nodes: a node's path is its parent's path and its entry (`None`: the
        # root, at `prefix`). A leaf's path is made only if something asks for it.
        todo: list[Any] = [None]
        above: list[Node | None] = [parent]
        if inner:
            # `x` (a mutable node) was visited by the caller: flatten its children, as a
            # list, from one flatten of `x` with JAX's entries (its node type's own
            # flatten: asking it for the entries apart would run it twice).
            pairs, flat.wrap = jax.tree_util.tree_flatten_with_path(
                x, is_leaf=lambda c: c is not x
            )
            x = [c for _, c in pairs]
            todo = [p[0] for p, _ in reversed(pairs)]
            above = [parent] * len(pairs)  # `parent` is the Node at `prefix`
        pop, pop_above = todo.pop, above.pop
        kids = x
        cur = Node((), None, None, None)

        by_names = child_keys.by_names.get

        def descend(path: Path, y: Any, n: Node | None) -> bool:
            # A dict whose keys were seen before: one lookup (`ChildKeys`, inlined).
            keys = by_names(tuple(y)) if type(y) is dict else None
            if keys is None:
                keys = child_keys(y)
            if keys:
                todo.extend(reversed(keys))
                above.extend([n] * len(keys))
            return False

        def at(y: Any) -> bool:
            if inner:
                if y is kids:
                    return False  # the list of a mutable node's children: not a node
                e, par = pop(), pop_above()
                if par is parent and is_hidden(e):
                    append(y)  # NNX bookkeeping: kept, shown to nobody
                    return True
            else:
                e, par = pop(), pop_above()
            f = kinds_get(type(y))
            if f is None:
                f = learn(y)
            if exclude is not None or f & SPECIAL:
                path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
                if exclude is not None and call_user("exclude", exclude, path, path, y):
                    append(y)
                    return True
                if f & SHARED:
                    self.met_shared = True
                    if id(y) in done:  # met before: the same output, not revisited
                        late(values, pending, done[id(y)] if rebuild else None)
                        return True
                if f & BOX:
                    return self._box(path, y, f, par, values, pending, True)
            o = outer if e is None else None
            # A matcher that answers by the last key entry (`by_last`) or by type
            # (`of_type`, `arrays`; outside boxes) is read from its memo, without a call,
            # when it knows the answer.
            h = None
            if memo_get is not None and e is not None and type(e) is not BoxKey:
                try:
                    h = memo_get(e)
                except TypeError:  # an unhashable key entry: asked below
                    pass
            elif type_get is not None and o is None:
                h = type_get(type(y))
            if f & LEAF and visit is None:
                # A leaf (never `None`), asked through one reused Node: no object per
                # leaf (the cyclic GC's passes over them cost more than the asking).
                ask = h is None and select is not None
                if ask or leaf is not None:
                    path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
                    cur.path, cur.node, cur.outer, cur.parent, cur._segs = path, y, o, par, None
                    if ask:
                        h = select(cur)  # type: ignore[misc]
                if h:
                    # `hits.add`, inlined: this is the hot path of a big `replace`.
                    if o is not None:
                        outers[len(hit_nodes)] = o
                    if e is None:
                        hit_base(prefix)
                        hit_entry(None)
                    elif whole_paths:  # made now, while the parent's path is fresh
                        hit_base(par.path + (e,))  # type: ignore[union-attr]
                        hit_entry(None)
                    else:  # made when asked for (as `replace` calls `fn`)
                        hit_base(par.path)  # type: ignore[union-attr]
                        hit_entry(e)
                    hit_node(y)
                    if hit_parents is not None:
                        hit_parents.append(par)
                    if outermost:
                        if rebuild and not f & SHARED:  # `_hit`, inlined
                            slot(len(values))
                            slot_hit(len(hit_nodes) - 1)
                            append(None)
                            return True
                        return self._hit(y, f, flat)
                append(y if leaf is None else leaf(cur))
                return True
            path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
            n = Node(path, y, o, par)
            if select is not None and (y is not None or include_none):
                if h is None:
                    h = select(n)
                if h:
                    hit(path, y, o, par)
                    if outermost:
                        return self._hit(y, f, flat)
            elif visit is not None:
                action = visit(n)
                if n.node is not y:  # `visit` put another node here (prewalk)
                    return self._into(n, self.flags(n.node), values, pending, action, y)
                if action >= HIT:
                    hit(path, y, o, par)
                    if action == HIT:
                        return self._hit(y, f, flat)
                elif action == KEEP:
                    append(y)
                    return True
            if f & LEAF or (is_leaf is not None and call_user("is_leaf", is_leaf, path, y)):
                append(y if leaf is None else leaf(n))
                return True
            if f & MUTABLE:
                sub = done[id(y)] = self.walk(path, y, n, None, True)
                late(values, pending, sub)
                return True
            return descend(path, y, n)

        if not inner and flags_of(x) & LEAF:  # a box's array, mostly: no flatten needed
            at(x)
            leaves, flat.treedef = values, _LEAF
        else:
            leaves, flat.treedef = jax.tree_util.tree_flatten(x, is_leaf=at)
        if todo or len(leaves) != len(values):  # pragma: no cover - a broken invariant
            raise AssertionError("treewalk: the flatten and the pass met different nodes")
        return flat

    def _hit(self, y: Any, f: int, flat: Flat) -> bool:
        """A hit the pass does not go into: its value is `results[i]`, known later."""
        if not self.rebuild:
            if f & SHARED:
                self.done[id(y)] = None
            flat.values.append(None)
        elif f & SHARED:  # met again: the same result (a rare case: a Ref)
            ref = self.done[id(y)] = Ref(len(self.hits) - 1)
            self._late(flat.values, flat.pending, ref)
        else:
            flat.slots.append(len(flat.values))
            flat.slot_hits.append(len(self.hits) - 1)
            flat.values.append(None)
        return True

    @staticmethod
    def _late(values: list[Any], pending: list[int], v: Any) -> None:
        if type(v) in LATE:
            pending.append(len(values))
        values.append(v)

    def _box(
        self,
        path: Path,
        box: Any,
        f: int,
        parent: Node | None,
        values: list[Any],
        pending: list[int],
        visit_it: bool,
    ) -> bool:
        if visit_it and self.visit_boxes and self.visit is not None:
            n = Node(path, box, None, parent)
            action = self.visit(n)
            if n.node is not box:
                return self._into(n, self.flags(n.node), values, pending, action, box)
            if action >= HIT:
                self.hits.add(path, box, None, parent)
            if action == HIT:
                ref = Ref(len(self.hits) - 1) if self.rebuild else None
                self._late(values, pending, ref)
                return True
            if action == KEEP:
                values.append(box)
                return True
            parent = n
        name, inner, rebox = unbox(box, () if f & LEAF_BOX else self.pytree_boxes)
        sub = self.walk((*path, BoxKey(name)), inner, parent, box, False)
        out: Any = sub if f & LEAF_BOX and self.bare_leaf_boxes else Boxed(rebox, sub)
        if f & SHARED:
            self.done[id(box)] = out
        self._late(values, pending, out)
        return True

    def _into(
        self, n: Node, f: int, values: list[Any], pending: list[int], action: int, old: Any
    ) -> bool:
        """`visit` put `n.node` in place of `old`: go into it (its root is not visited
        again), unless `visit` said `KEEP` or it is a leaf. A shared `old` met again
        gets the same output."""
        new = n.node
        if action == KEEP or (f & LEAF and not f & BOX):
            values.append(new)
        elif f & BOX:
            self._box(n.path, new, f, n.parent, values, pending, False)
        else:
            self._late(values, pending, self.walk(n.path, new, n, None, True))
        if self.flags(old) & SHARED:
            self.done[id(old)] = values[-1]
        return True

"""The one traversal under every treewalk call.

A pass over a tree is one C++ `jax.tree_util.tree_flatten` whose `is_leaf`, called on
every node in pre-order, is `at` in `Pass.flatten` below. `at` takes two steps:

1. **The rules, the same for every call** (here and nowhere else):
   - **excluded** subtrees and NNX's bookkeeping (**hidden children**, `_pytree__state`)
     are kept as they are and shown to nobody;
   - a **shared mutable object** (NNX module or variable, penzai parameter) is visited
     once: met again, it is not visited again and comes out as the same object as the
     first time (ties kept); every mutable object in the result is a new one;
   - a **box** (NNX `Variable`, linen `Partitioned`, penzai `Parameter`; see
     `treewalk._frameworks`) is opened: the value inside is visited at the box's path
     plus a `BoxKey`, and the box is rebuilt around the result with its metadata (the
     walks visit the box itself first);
   - `None`, empty containers and static nodes are nodes without children, as JAX has
     them (with `include_none`, a `None` is a leaf: a slot for an array);
   - `is_leaf` nodes are leaves.
2. **The mode's step**, which says what the node is for:
   - `Find` (queries, `replace`): a node its `Matcher` picks is a hit;
   - `Leaves` (masks, labels, `show`, NNX filters, checkpoints): every leaf gets a
     value from whether a hit above it covers it;
   - `Walk` (`prewalk`): `fn` at every node, and the pass goes into what it returned;
   - `Record` (`postwalk`): every node into a `Log`, folded children first afterwards.

Every node that is not descended into becomes one leaf of the flatten and one entry of
`Flat.values`, in order, so one `treedef.unflatten` puts results back. A node whose
children are walked apart (a mutable node, a covered subtree, what `prewalk`'s `fn`
returned, a box's value) gets a flatten of its own, rebuilt through
`rebuild.level`'s treedef.

**Speed tricks kept, and what each buys** (2-core CPU, GC on; see `bench/RESULTS.md`):

- *Paths built here, not by JAX.* The pass runs the plain `tree_flatten` and makes each
  node's path from its parent's and the entries `children.ChildKeys` gives. JAX's path
  flatten keeps a tuple and a key entry per node alive until it returns, which the
  cyclic GC rescans: on 100,000 leaves that was 2-3x the whole call.
- *A leaf's path is made only when something asks for it* (`node.LazyLeaf`); a hit
  keeps its parent's path and its entry (`Hits`). Queries make a hit's path at the hit.
- *Declared memos* (`Matcher.by_entry`, `by_type`, `leaves_only`) are read before a
  `Node` is made: `paths("**/bias")` on 100,000 leaves asks its test a few dozen times.
- *No object per hit* (`Flat.slots`): 100,000 hits are two lists of ints.
- *A box's array is stepped without a flatten of its own* (`Find.lone`): an
  NNX `State`'s 149 `Param`s cost 149 flattens (an `Out`, a step closure each) before;
  `paths("**/bias")` on the NNX transformer of `bench/models.py` is 25-35% faster, a
  `replace` of its biases 10-15%.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from .._frameworks import is_hidden, registry, unbox
from .children import ChildKeys
from .errors import call_user, check_callable
from .kinds import BOX, LEAF, LEAF_BOX, MUTABLE, SHARED, SPECIAL, TIE, child_kinds, type_kinds
from .matcher import Matcher
from .node import Hits, LazyLeaf, Node, memo_entry
from .paths import BoxKey, Path
from .rebuild import KEPT, LATE, Boxed, Flat, Log, Ref, level
from .rebuild import LEAF as LOG_LEAF
from .rebuild import TIE as LOG_TIE

_LEAF_TREEDEF = jax.tree_util.tree_structure(0)  # the treedef of a lone leaf
_SAME: Any = object()  # no list of a node's children (`Pass.flatten`)
PLAIN = LEAF | SPECIAL  # a leaf with none of these flags but `LEAF` is a plain one

#: A mode's step at one node: `step(node, flags, entry, parent Node) -> is a flatten leaf`.
Step = Callable[[Any, int, Any, "Node | None"], bool]


class Out:
    """What one flatten of a pass writes: its `Flat`, and the steps every mode ends with
    (keep a value, go into a node's children, walk a subtree apart)."""

    __slots__ = ("flat", "append", "todo", "above", "pass_", "state", "key", "go_on")

    flat: Flat
    go_on: Callable[[Any, int, Node], bool]

    def __init__(self, pass_: Pass, state: Any, key: Any) -> None:
        self.flat = Flat()
        self.append = self.flat.values.append
        self.todo: list[Any] = [None]  # entries of the nodes to come, the next one last
        self.above: list[Node | None] = []  # and their parents' Nodes
        self.pass_ = pass_
        self.state = state  # the mode's state in this flatten (a mask: covered or not)
        self.key = key  # the entry the root's memos are read by (a box's value: the box's)
        by_names, child_keys = pass_.child_keys.by_names.get, pass_.child_keys
        extend, extend_above, flat = self.todo.extend, self.above.extend, self.flat

        def go_on(y: Any, f: int, n: Node) -> bool:
            """The pass goes into internal node `n` (of flags `f`): below it, in the same
            flatten; a mutable node's children apart (so that it comes out as a new
            object, once). A dict whose keys were seen before costs one lookup."""
            if f & MUTABLE:
                return _apart(pass_, flat, n, state, f)
            keys = by_names(tuple(y)) if type(y) is dict else None
            if keys is None:
                keys = child_keys(y)
            if keys:
                extend(reversed(keys))
                extend_above([n] * len(keys))
            return False

        # It holds no reference to `self`: a cycle would leave each flatten's nodes and
        # arrays to the garbage collector (measured: 45,000 objects a call on 500 NNX
        # layers, a median 2.7x the fastest call).
        self.go_on = go_on

    def late(self, v: Any) -> bool:
        """Put `v` here, resolved when the flatten is finished."""
        return _late(self.flat, v)

    def apart(self, n: Node, state: Any, f: int) -> bool:
        """Walk `n`'s children in a flatten of their own, in `state` (a mutable node, a
        subtree in another state, what `prewalk`'s `fn` returned); `n` (of flags `f`) comes
        out as the same new object wherever it is met again."""
        return _apart(self.pass_, self.flat, n, state, f)


def _late(flat: Flat, v: Any) -> bool:
    if type(v) in LATE:
        flat.pending.append(len(flat.values))
    flat.values.append(v)
    return True


def _apart(pass_: Pass, flat: Flat, n: Node, state: Any, f: int) -> bool:
    sub = pass_.flatten(n.path, n.node, n, None, state, children=True)
    if f & SHARED:
        pass_.done[id(n.node)] = sub
    return _late(flat, sub)


class Pass:
    """One traversal of one tree, in `mode` (`Find`, `Leaves`, `Walk` or `Record`).

    - `is_leaf(node)`: JAX's meaning; `exclude(path, node)`: that subtree is kept as it is
      and shown to nobody.
    - `include_none`: `None` nodes are leaves (slots a call may fill) instead of empty
      nodes.
    - `rebuild`: build the values at all (a query needs only the hits).
    - `done`: the outputs of the shared mutable objects met so far; pass another pass's to
      copy a subtree consistently with it.
    - `bare_leaf_boxes`: a box that is a JAX leaf (a penzai `Parameter`) gives the value
      made of its content, not a new box around it (masks: a leaf for a leaf).

    `run(tree)` returns the top `Flat`; `flat.finish(results)` rebuilds the tree.
    """

    def __init__(
        self,
        mode: Mode,
        *,
        is_leaf: Callable[[Any], bool] | None = None,
        exclude: Callable[[Path, Any], bool] | None = None,
        include_none: bool = False,
        rebuild: bool = True,
        done: dict[int, Any] | None = None,
        bare_leaf_boxes: bool = False,
    ) -> None:
        check_callable("is_leaf", is_leaf, optional=True, hint="lambda node: ...")
        check_callable("exclude", exclude, optional=True, hint="lambda path, node: ...")
        self.mode = mode
        self.is_leaf, self.exclude, self.include_none = is_leaf, exclude, include_none
        self.rebuild = rebuild
        self.bare_leaf_boxes = bare_leaf_boxes
        self.kinds = type_kinds()
        self.pytree_boxes = registry.pytree_boxes
        self.child_keys = ChildKeys(child_kinds)
        self.done: dict[int, Any] = {} if done is None else done
        self.met_shared = False  # did the pass meet a shared mutable object?

    def run(self, tree: Any, prefix: Path = ()) -> Flat:
        return self.flatten(prefix, tree, None, None, self.mode.top)

    def flatten(
        self,
        prefix: Path,
        x: Any,
        parent: Node | None,
        outer: Any,
        state: Any,
        *,
        children: bool = False,
        key: Any = None,
    ) -> Flat:
        """One flatten of `x` at path `prefix` (the tree, a box's value, a node's children).
        `children`: `x` itself was visited (`parent` is its Node): only its children
        are, flattened as a list and rebuilt through `x`'s one-level treedef. `outer`: the
        box `x` was taken out of; `key`: the entry `x`'s memos are read by."""
        out = Out(self, state, key)
        flat, todo, above = out.flat, out.todo, out.above
        kinds_get, learn = self.kinds.get, self.kinds.learn
        exclude, done, mode = self.exclude, self.done, self.mode
        step = mode.step(self, out, prefix, outer)
        pop, pop_above = todo.pop, above.pop
        kids: Any = _SAME  # the list of `x`'s children, with `children`
        if children:
            entries, kids, flat.wrap = level(x)
            todo[:] = reversed(entries)
            above[:] = [parent] * len(entries)
            x = kids
        else:
            above.append(parent)

        def at(y: Any) -> bool:
            if y is kids:
                return False  # the list of a node's children: not a node
            e, par = pop(), pop_above()
            f = kinds_get(type(y))
            if f is None:
                f = learn(y)
            if exclude is not None or f & SPECIAL or (children and par is parent):
                if children and par is parent and is_hidden(e):
                    return mode.keep(out, y)  # NNX bookkeeping: kept, shown to nobody
                path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
                if exclude is not None and call_user("exclude", exclude, path, path, y):
                    return mode.keep(out, y)
                if f & SHARED:
                    self.met_shared = True
                    if id(y) in done:  # met before: the same output, not visited again
                        return mode.again(out, y, done[id(y)] if self.rebuild else None, path)
                if f & BOX and not mode.boxes_are_nodes:
                    return self.open(path, y, f, par, out)
            return step(y, f, e, par)

        if not children and self.flags(x) & LEAF:
            at(x)  # a lone leaf (a box's array, mostly): no flatten needed
            leaves, flat.treedef = flat.values, _LEAF_TREEDEF
        else:
            leaves, flat.treedef = jax.tree_util.tree_flatten(x, is_leaf=at)
        if todo or len(leaves) != len(flat.values):  # pragma: no cover - a broken invariant
            raise AssertionError("treewalk: the flatten and the pass met different nodes")
        return flat

    def open(self, path: Path, box: Any, f: int, parent: Node | None, out: Out) -> bool:
        """A box: its value walked at `path` plus a `BoxKey` (with the box as `outer`), and
        the box rebuilt around the result."""
        name, inner, rebox = unbox(box, () if f & LEAF_BOX else self.pytree_boxes)
        at, key, mode = (*path, BoxKey(name)), memo_entry(path), self.mode
        sub: Any
        if mode.lone_arrays and self.exclude is None and self.flags(inner) & PLAIN == LEAF:
            sub = mode.lone(self, at, inner, box, key, parent)  # no flatten of its own
        else:
            sub = self.flatten(at, inner, parent, box, out.state, key=key)
        if not (f & LEAF_BOX and self.bare_leaf_boxes):
            sub = Boxed(rebox, sub)
        if f & SHARED:
            self.done[id(box)] = sub
        return out.late(sub)

    def flags(self, x: Any) -> int:
        f = self.kinds.get(type(x))
        return self.kinds.learn(x) if f is None else f

    def leaf(self, y: Any, f: int, path: Path) -> bool:
        """Is `y` (of flags `f`, at `path`) a leaf of the pass: a JAX leaf, a `None` where
        `include_none`, or what `is_leaf` says is one?"""
        if f & LEAF or (y is None and self.include_none):
            return True
        is_leaf = self.is_leaf
        return is_leaf is not None and bool(call_user("is_leaf", is_leaf, path, y))


def leaf_node(path: Path | None, y: Any, o: Any, par: Node | None, e: Any) -> Node:
    """A leaf's `Node`: at `path`, or (`None`) at its parent's plus entry `e`, made if asked."""
    if path is None:
        return LazyLeaf(par, e, y, o)  # type: ignore[arg-type]
    return Node(path, y, o, par, True, e)


class Mode:
    """What a pass is for: its `step` at each node after the rules (see the module)."""

    #: The state a pass starts in (`Leaves`: nothing covered yet).
    top: Any = None
    #: Are boxes nodes too, visited before their value (the walks)?
    boxes_are_nodes = False
    #: Does the mode step a box's value that is a JAX leaf without a flatten (`lone`)?
    lone_arrays = False

    def step(self, p: Pass, out: Out, prefix: Path, outer: Any) -> Step:
        raise NotImplementedError

    def lone(self, p: Pass, path: Path, y: Any, box: Any, key: Any, parent: Node | None) -> Any:
        """With `lone_arrays`: the step at `y`, a JAX leaf inside `box` at `path` (`key`:
        the entry its memos are read by), without a flatten; the value `box` is rebuilt
        around."""
        raise NotImplementedError

    def keep(self, out: Out, y: Any) -> bool:
        """A node the rules keep as it is (hidden, excluded)."""
        out.append(y)
        return True

    def again(self, out: Out, y: Any, value: Any, path: Path) -> bool:
        """A shared mutable object met before, at `path`: `value`, its first visit's
        output."""
        return out.late(value)


# ---------------------------------------------------------------------------------- Copy


class Copy(Mode):
    """Nothing but the rules: the tree rebuilt as it is, with its mutable objects new (a
    private copy, consistent with another pass's `done`)."""

    def step(self, p: Pass, out: Out, prefix: Path, outer: Any) -> Step:
        append, go_on = out.append, out.go_on

        def step(y: Any, f: int, e: Any, par: Node | None) -> bool:
            path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
            if p.leaf(y, f, path):
                append(y)
                return True
            return go_on(y, f, Node(path, y, outer if e is None else None, par, False, e))

        return step


# ---------------------------------------------------------------------------------- Find


class Find(Mode):
    """The nodes `matcher` picks are hits (`hits`), in pre-order. With `outermost` the
    pass does not go into a hit (what `replace` acts on); otherwise it does (every
    match). `None` is asked only where `include_none` makes it a leaf. `paths_now`: make
    each hit's path at the hit (queries: kept as parent path and entry instead, the
    parents' paths would outlive the pass for the GC to scan). `keep_parents`: keep each
    hit's parent `Node` (for an `fn` that reads `n.parent`)."""

    def __init__(
        self,
        matcher: Matcher,
        *,
        outermost: bool = True,
        paths_now: bool = False,
        keep_parents: bool = False,
    ) -> None:
        self.matcher = matcher
        self.outermost, self.paths_now = outermost, paths_now
        self.hits = Hits(keep_parents)

    def step(self, p: Pass, out: Out, prefix: Path, outer: Any) -> Step:
        m = self.matcher
        test, leaves_only = m.test, m.leaves_only
        by_entry = None if m.by_entry is None else m.by_entry.get
        by_type = None if m.by_type is None else m.by_type.get
        outermost, paths_now, rebuild = self.outermost, self.paths_now, p.rebuild
        hits, flat, append, key = self.hits, out.flat, out.append, out.key
        bases, entries, nodes = hits.bases.append, hits.entries.append, hits.nodes
        add_node, outers, parents, leaf_hits = nodes.append, hits.outers, hits.parents, hits.leaves
        slot, slot_hit = flat.slots.append, flat.slot_hits.append
        plain = p.is_leaf is None and not p.include_none  # a node's type says if it's a leaf
        include_none, go_on, done = p.include_none, out.go_on, p.done

        def step(y: Any, f: int, e: Any, par: Node | None) -> bool:
            o = outer if e is None else None
            if plain:
                leaf = f & LEAF
            else:
                leaf = p.leaf(y, f, prefix if e is None else par.path + (e,))  # type: ignore[union-attr]
            n = None
            if not leaf:
                path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
                n = Node(path, y, o, par, False, e)
            # Ask the matcher, through what it declares: leaves only, memos by last key
            # entry or by type; `None` only as a leaf (with `include_none`).
            if (leaves_only and not leaf) or (y is None and not include_none):
                h = False
            else:
                h = None
                k = key if e is None else e
                if by_entry is not None and k is not None:
                    try:
                        h = by_entry(k)
                    except TypeError:  # an unhashable key entry: asked below
                        pass
                if h is None and by_type is not None and o is None:
                    h = by_type(type(y))
                if h is None:
                    if n is None:  # a leaf: its path made if asked for
                        n = Node(prefix, y, o, par, True) if e is None else LazyLeaf(par, e, y, o)  # type: ignore[arg-type]
                    h = test(n)
            if h:
                # `hits.add`, inlined: this is the hot path of a big `replace`.
                if o is not None:
                    outers[len(nodes)] = o
                if e is None:
                    bases(prefix)
                    entries(None)
                elif paths_now:  # made now, while the parent's path is fresh
                    bases(n.path if n is not None else par.path + (e,))  # type: ignore[union-attr]
                    entries(None)
                else:  # made when asked for (as `replace` calls `fn`)
                    bases(par.path)  # type: ignore[union-attr]
                    entries(e)
                add_node(y)
                if parents is not None:
                    parents.append(par)
                    leaf_hits.append(bool(leaf))  # type: ignore[union-attr]
                if outermost:
                    if not rebuild:
                        if f & SHARED:
                            done[id(y)] = None
                        append(None)
                    elif f & SHARED:  # met again, the same result (a Ref: a rare case)
                        done[id(y)] = ref = Ref(len(nodes) - 1)
                        out.late(ref)
                    else:
                        slot(len(flat.values))
                        slot_hit(len(nodes) - 1)
                        append(None)
                    return True
            if leaf:
                append(y)
                return True
            return go_on(y, f, n)  # type: ignore[arg-type]

        return step

    lone_arrays = True

    def lone(self, p: Pass, path: Path, y: Any, box: Any, key: Any, parent: Node | None) -> Any:
        """`step` at a box's array (an NNX `Param`'s), without a flatten: the value the
        box is rebuilt around (a `Ref` for a hit's result)."""
        m, hits, outer = self.matcher, self.hits, box
        h = None
        if m.by_entry is not None and key is not None:
            try:
                h = m.by_entry.get(key)
            except TypeError:  # an unhashable key entry: asked below
                pass
        if h is None:
            h = m.test(Node(path, y, outer, parent, True))
        if not h:
            return y
        hits.outers[len(hits.nodes)] = outer
        hits.bases.append(path)
        hits.entries.append(None)
        hits.nodes.append(y)
        if hits.parents is not None:
            hits.parents.append(parent)
            hits.leaves.append(True)  # type: ignore[union-attr]
        if not self.outermost:
            return y
        return Ref(len(hits.nodes) - 1) if p.rebuild else None


# -------------------------------------------------------------------------------- Leaves


class Leaves(Mode):
    """Every leaf gets a value from what covers it, in one of two ways.

    - `cover`, a `Matcher`: the state is whether it picks the node or one above it (a
      node it picks covers every leaf below). A leaf's value is that bool (negated with
      `negate`), or `at_leaf(n, covered)`. The engine asks `cover` through its declared
      shortcuts, so a leaf a memo answers costs no `Node` (a mask of 100,000 leaves
      makes none for `"**/bias"`); a `cover` that is the complement of another (`~a`)
      is read as that other, negated (none for `~tw.name("bias")` either).
    - Otherwise `at_node(n, state) -> state` at each internal node (labels: the labels
      that cover it) and `at_leaf(n, state) -> value` at each leaf.

    A subtree whose state changes is walked apart, in the new state."""

    def __init__(
        self,
        at_leaf: Callable[[Node, Any], Any] | None = None,
        at_node: Callable[[Node, Any], Any] | None = None,
        top: Any = None,
        *,
        cover: Matcher | None = None,
        negate: bool = False,
        at_again: Callable[[Path, Any], None] | None = None,
    ) -> None:
        while cover is not None and cover.complement_of is not None:  # `~a`: `a`, negated
            cover, negate = cover.complement_of, not negate
        self.at_leaf, self.at_node, self.cover, self.negate = at_leaf, at_node, cover, negate
        self.top = False if cover is not None else top
        #: Called with the path and the object each time a shared mutable object is met
        #: again (checkpoints name a tie at every path it is at).
        self.at_again = at_again

    def again(self, out: Out, y: Any, value: Any, path: Path) -> bool:
        if self.at_again is not None:
            self.at_again(path, y)
        return out.late(value)

    def step(self, p: Pass, out: Out, prefix: Path, outer: Any) -> Step:
        at_leaf, at_node, state, negate = self.at_leaf, self.at_node, out.state, self.negate
        append, go_on, apart, key = out.append, out.go_on, out.apart, out.key
        cover = self.cover
        test = leaves_only = by_entry = by_type = None
        if cover is not None:
            test, leaves_only = cover.test, cover.leaves_only
            by_entry = None if cover.by_entry is None else cover.by_entry.get
            by_type = None if cover.by_type is None else cover.by_type.get
        plain = p.is_leaf is None and not p.include_none

        def memo(y: Any, e: Any, o: Any) -> Any:
            # `cover`'s answer from its declared memos, or `None`: ask its test.
            k = key if e is None else e
            if by_entry is not None and k is not None:
                try:
                    h = by_entry(k)
                except TypeError:  # an unhashable key entry
                    h = None
                if h is not None:
                    return h
            if by_type is not None and o is None:
                return by_type(type(y))
            return None

        def step(y: Any, f: int, e: Any, par: Node | None) -> bool:
            o = outer if e is None else None
            path = None
            leaf = f & LEAF and plain and e is not None  # the common leaf: no path made
            if not leaf:
                path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
                leaf = p.leaf(y, f, path)
            if leaf:
                if cover is None:
                    append(at_leaf(leaf_node(path, y, o, par, e), state))  # type: ignore[misc]
                    return True
                n = None
                h = True if state else memo(y, e, o)
                if h is None:
                    n = leaf_node(path, y, o, par, e)
                    h = test(n)  # type: ignore[misc]
                h = not h if negate else bool(h)
                if at_leaf is None:
                    append(h)
                else:
                    append(at_leaf(n or leaf_node(path, y, o, par, e), h))
                return True
            n = Node(path, y, o, par, False, e)  # type: ignore[arg-type]  # made: not a leaf
            if y is None:
                return go_on(y, f, n)
            if cover is not None:
                if not state and not leaves_only:
                    h = memo(y, e, o)
                    if test(n) if h is None else h:  # type: ignore[misc]
                        return apart(n, True, f)  # covered: every leaf below
                return go_on(y, f, n)
            if at_node is not None:
                new = at_node(n, state)
                if new is not state:
                    return apart(n, new, f)
            return go_on(y, f, n)

        return step


# ---------------------------------------------------------------------------------- Walk


class Walk(Mode):
    """`visit(n) -> new node` at every node, boxes included, the root first; the pass goes
    into what it returned (`visit` is not called again on the new node itself). A tie
    (an array or mutable object met before) gets the first visit's output."""

    boxes_are_nodes = True

    def __init__(self, visit: Callable[[Node], Any]) -> None:
        self.visit = visit
        self.ties: dict[int, Any] = {}

    def step(self, p: Pass, out: Out, prefix: Path, outer: Any) -> Step:
        visit, ties, append, go_on = self.visit, self.ties, out.append, out.go_on

        def step(y: Any, f: int, e: Any, par: Node | None) -> bool:
            if f & TIE and id(y) in ties:
                append(ties[id(y)])
                return True
            o = outer if e is None else None
            path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
            leaf = not f & BOX and p.leaf(y, f, path)
            n = Node(path, y, o, par, leaf, e)
            new = visit(n)
            if f & TIE:
                ties[id(y)] = new
            if new is y and not f & BOX:
                if leaf:
                    append(y)
                    return True
                return go_on(y, f, n)
            # Into what `visit` returned: its root is not visited again.
            g = p.flags(new)
            if g & BOX:
                p.open(path, new, g, par, out)
            elif new is None or p.leaf(new, g, path):
                append(new)
            else:
                out.apart(Node(path, new, o, par), out.state, g)  # not in the flatten
            if f & SHARED:
                p.done[id(y)] = out.flat.values[-1]
            return True

        return step


# -------------------------------------------------------------------------------- Record


class Record(Mode):
    """Every visible node into `log` in pre-order, with how to rebuild it, for `Log.fold`
    (`postwalk`): a leaf, a node and its children's count, a kept value, or a tie."""

    boxes_are_nodes = True

    def __init__(self) -> None:
        self.log = Log()
        self.seen: set[int] = set()

    def step(self, p: Pass, out: Out, prefix: Path, outer: Any) -> Step:
        log, seen, append, go_on = self.log, self.seen, out.append, out.go_on

        def step(y: Any, f: int, e: Any, par: Node | None) -> bool:
            if f & TIE:
                if id(y) in seen:
                    log.add(LOG_TIE, (), id(y))
                    append(y)
                    return True
                seen.add(id(y))
                log.firsts[len(log.kinds)] = id(y)
            o = outer if e is None else None
            path = prefix if e is None else par.path + (e,)  # type: ignore[union-attr]
            if f & BOX:
                name, inner, rebox = unbox(y, () if f & LEAF_BOX else p.pytree_boxes)
                log.node(path, y, lambda kids: rebox(kids[0]), 1)
                sub = p.flatten((*path, BoxKey(name)), inner, par, y, None, key=memo_entry(path))
                return out.late(sub)
            if p.leaf(y, f, path):
                log.add(LOG_LEAF, path, y)
                append(y)
                return True
            treedef = jax.tree_util.tree_structure(y, is_leaf=lambda c: c is not y)
            log.node(path, y, treedef.unflatten, treedef.num_leaves)
            return go_on(y, f, Node(path, y, o, par, False, e))

        return step

    def keep(self, out: Out, y: Any) -> bool:
        self.log.add(KEPT, (), y)
        return super().keep(out, y)

    def again(self, out: Out, y: Any, value: Any, path: Path) -> bool:
        self.log.add(LOG_TIE, (), id(y))
        return super().again(out, y, value, path)

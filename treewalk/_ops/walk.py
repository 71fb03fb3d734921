"""The two public walks, `prewalk` and `postwalk`: the engine's pass with `fn` at every
node (boxes included), and the same rules as every other call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._core.engine import Copy, Pass, Record, Walk
from .._core.errors import call_user, check_callable
from .._core.kinds import SHARED, flags_of
from .._core.node import Node
from .._core.paths import Path

WalkFn = Callable[[Path, Any], Any]


class _Private:
    """Copies of the mutable objects (NNX modules and variables, penzai parameters) a walk
    hands `fn`, so that an in-place edit never reaches the input. A copy is made when
    the walk first meets an object of the input, with every mutable object inside it
    (ties kept); what is inside a copy is the walk's own already, and is not copied
    again. Trees without mutable objects cost nothing."""

    def __init__(self, is_leaf: Any, exclude: Any) -> None:
        self.is_leaf, self.exclude = is_leaf, exclude
        self.done: dict[int, Any] = {}  # input object id -> its copy, for ties
        self.fresh: set[int] = set()  # ids of the copies

    def __call__(self, path: Path, x: Any) -> Any:
        if id(x) in self.fresh:
            return x
        start = len(self.done)
        p = Pass(Copy(), is_leaf=self.is_leaf, exclude=self.exclude, done=self.done)
        out = p.run(x, prefix=path).finish()  # `exclude` sees full paths
        self.fresh.update(id(v.out) for v in list(self.done.values())[start:])
        self.fresh.add(id(out))
        return out


def prewalk(
    fn: WalkFn,
    tree: Any,
    *,
    is_leaf: Callable[[Any], bool] | None = None,
    exclude: Callable[[Path, Any], bool] | None = None,
) -> Any:
    """Rebuild `tree` top-down: `fn(path, node)` on every node, then descend into its result.

    Every node is visited, internal nodes and leaves alike, the root (path `()`) first;
    `None` children and empty containers are nodes too, and keep their place. A box (NNX
    `Variable`, linen `Partitioned`) is a node, and so is the value inside it, at the
    box's path plus a `tw.BoxKey` entry (which `path_str` leaves out). NNX's bookkeeping
    (`_pytree__state`) is not shown.

    **Arguments:**

    - `fn`: `fn(path, node) -> node`. Whatever it returns is descended into (`fn` is not
      called again on the returned node itself).
    - `tree`: any pytree.
    - `is_leaf`: as in JAX: `is_leaf(node)` true stops flattening there and `fn` sees the
      node as a leaf.
    - `exclude`: `exclude(path, node)` true returns that subtree untouched (the same object);
      `fn` is called neither on it nor on anything inside it.

    **Returns:**

    The rebuilt tree. Its containers are new objects; leaves `fn` returned as they were
    are the input's own. The same array or mutable object reached by several paths is
    given to `fn` once (at its first path) and comes out as one object. `fn` never gets
    an object of the input that an in-place edit could change: mutable objects (NNX
    modules and variables) are copied first.

    **Raises:**

    `tw.CallbackError` naming the path if `fn`, `is_leaf` or `exclude` raises; the input is
    left as it was. `tw.ArgumentError` if `fn` is not callable.

    !!! Example

        ```python
        import treewalk as tw

        seen = []
        tw.prewalk(lambda p, x: seen.append(tw.path_str(p)) or x, {"a": [1, 2]})
        assert seen == ["", "a", "a/0", "a/1"]
        ```
    """
    check_callable("fn", fn, hint="lambda path, node: node")
    private = _Private(is_leaf, exclude)

    def visit(n: Node) -> Any:
        x = n.node
        if flags_of(x) & SHARED:
            x = private(n.path, x)
        return call_user("fn", fn, n.path, n.path, x)

    return Pass(Walk(visit), is_leaf=is_leaf, exclude=exclude).run(tree).finish()


def postwalk(
    fn: WalkFn,
    tree: Any,
    *,
    is_leaf: Callable[[Any], bool] | None = None,
    exclude: Callable[[Path, Any], bool] | None = None,
) -> Any:
    """Rebuild `tree` bottom-up: children first, then `fn(path, node)` on the rebuilt node.

    Arguments, return value, ties and errors are as for [`tw.prewalk`][treewalk.prewalk];
    the only difference is the order: a node's `fn` runs after its children's, and sees
    the node rebuilt from their results. The root is visited last. The walk keeps no
    Python stack per level: trees as deep as JAX can flatten work.

    !!! Example

        ```python
        import treewalk as tw

        # Count leaves bottom-up: every container becomes the sum of its children.
        count = tw.postwalk(
            lambda p, x: sum(x) if isinstance(x, list) else 1, [[0, 0], [0]]
        )
        assert count == 3
        ```
    """
    check_callable("fn", fn, hint="lambda path, node: node")
    record = Record()
    Pass(record, is_leaf=is_leaf, exclude=exclude, rebuild=False).run(tree)
    return record.log.fold(fn)

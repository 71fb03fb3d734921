"""Selection over a tree: the walk, seen through its boxes, with each node's context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._path import Path
from ._selectors import Node, Selector
from ._walk import Stop, Walk


def scan(
    visit: Callable[[Node], Any],
    *,
    leaf: Callable[[Node], Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
    rebuild: bool = False,
) -> Walk:
    """A transparent `Walk` that gives every node a `Node` context (path, segments, box,
    parent), so selectors can look at paths, boxes and ancestors.

    `visit(n) -> node | Stop(node)` is called on every node before descending (a `Stop`
    does not descend); `leaf(n) -> node` on leaves.
    """

    def pre(path: Path, node: Any, parent: Node | None) -> Any:
        n = Node(path, node, walk.box, parent)
        walk.box = None
        out = visit(n)
        return out if type(out) is Stop else (out, n)

    leaf_hook = None if leaf is None else (lambda path, node, n: leaf(n))
    walk = Walk(pre, leaf=leaf_hook, is_leaf=is_leaf, transparent=True, rebuild=rebuild)
    return walk


def matches(
    tree: Any,
    selector: Selector,
    *,
    is_leaf: Callable[[Any], bool] | None = None,
    include_none: bool = False,
    outermost: bool = False,
) -> list[Node]:
    """Every node `selector` matches, in traversal order.

    `None` nodes are skipped unless `include_none`. With `outermost`, nodes inside a matched
    node are not considered (what `replace` acts on).
    """
    if not include_none:
        from ._fast import fast_matches, fast_types

        types = fast_types(selector)
        if types is not None:
            return fast_matches(tree, selector, types, is_leaf=is_leaf, outermost=outermost)
    hits: list[Node] = []
    match = selector.match

    def visit(n: Node) -> Any:
        node = n.node
        if (node is not None or include_none) and match(n):
            hits.append(n)
            if outermost:
                return Stop(node)
        return node

    scan(visit, is_leaf=is_leaf)(tree)
    return hits

"""The framework kinds `pytrees()` draws when their framework is installed: Flax NNX
modules, `Variable`s and `State`, linen `Partitioned` boxes, penzai `Parameter`s, and
shared NNX `Variable`s. Each framework is imported only when `pytrees()` is called."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from hypothesis import strategies as st

Strategy = st.SearchStrategy[Any]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # pragma: no cover - a parent package is missing
        return False


@functools.cache
def nnx_node() -> type | None:
    """`NnxNode(a, b)`, a Flax NNX module with two children; `None` without Flax."""
    if not _installed("flax"):
        return None
    from flax import nnx

    class NnxNode(nnx.Module):
        """A Flax NNX module with two children, each a `Variable`, a module or data."""

        def __init__(self, a: Any, b: Any) -> None:
            self.a = nnx.data(a)
            self.b = nnx.data(b)

    NnxNode.__module__, NnxNode.__qualname__ = "treewalk.testing", "NnxNode"
    return NnxNode


def nnx_kinds(children: Strategy, arrays: Strategy, ties: bool) -> list[Strategy]:
    """NNX modules around `children`, `Variable`s (`Param`, `BatchStat`) around arrays,
    `nnx.State` of a module, and (with `ties`) one `Variable` shared by two modules."""
    node = nnx_node()
    if node is None:
        return []
    from flax import nnx

    variables = st.one_of(arrays.map(nnx.Param), arrays.map(nnx.BatchStat))
    modules = st.recursive(
        variables, lambda kids: st.builds(node, kids, kids), max_leaves=4
    ).filter(lambda m: isinstance(m, nnx.Module))

    def shared(v: Any, a: Any, b: Any) -> Any:
        return node(node(v, a), node(v, b))  # the same Variable in two modules

    kinds = [
        st.builds(node, st.one_of(variables, children), children),
        variables,
        modules.map(nnx.state),
    ]
    return kinds + [st.builds(shared, variables, children, children)] if ties else kinds


def linen_kinds(arrays: Strategy) -> list[Strategy]:
    """Flax linen `Partitioned` boxes (one sharding name or `None` per axis)."""
    if not _installed("flax"):
        return []
    import flax.linen as nn

    names = st.sampled_from([None, "data", "model"])

    @st.composite
    def partitioned(draw: st.DrawFn) -> Any:
        x = draw(arrays)
        return nn.Partitioned(x, names=tuple(draw(names) for _ in range(x.ndim)))

    return [partitioned()]


def penzai_kinds(arrays: Strategy) -> list[Strategy]:
    """penzai `Parameter`s (mutable leaves holding an array under a label)."""
    if not _installed("penzai"):
        return []
    from penzai.core.variables import Parameter

    labels = st.integers(0, 99).map(lambda i: f"param_{i}")

    def make(x: Any, label: str) -> Any:
        return Parameter(value=x, label=label)

    return [st.builds(make, arrays, labels)]

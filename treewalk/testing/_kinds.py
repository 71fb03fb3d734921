"""The framework nodes `pytrees()` draws where their framework is installed: Flax NNX
modules (`NnxNode`), `Variable`s and `State`, linen `Partitioned` boxes, penzai
`Parameter`s. Each framework is imported on first use (when `pytrees()` is called),
never when `treewalk.testing` is imported."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # pragma: no cover - a parent package is missing
        return False


@functools.cache
def nnx_node() -> type | None:
    """`NnxNode(a, b)`, a Flax NNX module with two children; `None` without Flax."""
    if not installed("flax"):
        return None
    from flax import nnx

    class NnxNode(nnx.Module):
        """A Flax NNX module with two children, each a `Variable`, a module or data."""

        def __init__(self, a: Any, b: Any) -> None:
            self.a = nnx.data(a)
            self.b = nnx.data(b)

    NnxNode.__module__, NnxNode.__qualname__ = "treewalk.testing", "NnxNode"
    return NnxNode


@functools.cache
def nnx_variables() -> tuple[Callable[[Any], Any], ...]:
    """`(nnx.Param, nnx.BatchStat)`, or `()` without Flax."""
    if not installed("flax"):
        return ()
    from flax import nnx

    return (nnx.Param, nnx.BatchStat)


def nnx_state(module: Any) -> Any:
    """`nnx.state(module)`: the pure state of an NNX module."""
    from flax import nnx

    return nnx.state(module)


@functools.cache
def linen_partitioned() -> Callable[..., Any] | None:
    """`nn.Partitioned(value, names=...)`, a linen box; `None` without Flax."""
    if not installed("flax"):
        return None
    import flax.linen as nn

    return nn.Partitioned


@functools.cache
def penzai_parameter() -> Callable[..., Any] | None:
    """`Parameter(value=..., label=...)`, a penzai mutable leaf; `None` without penzai."""
    if not installed("penzai"):
        return None
    from penzai.core.variables import Parameter

    return Parameter

"""Hypothesis strategies (and law checks) for property-testing pytree transforms.

Install with `pip install "jax-treewalk[testing]"` (needs `hypothesis`). The strategies
build the kinds of trees real code meets (see [`pytrees`][treewalk.testing.pytrees]); the
law checks (`check_laws`, ...) run a hypothesis test of your own transform over them.

!!! Example

    ```python
    from hypothesis import given
    import treewalk as tw
    from treewalk.testing import pytrees

    @given(pytrees())
    def test_identity(tree):
        out = tw.prewalk(lambda path, node: node, tree)
        assert tw.paths(out, tw.arrays) == tw.paths(tree, tw.arrays)

    test_identity()
    ```
"""

from __future__ import annotations

from typing import Any

try:
    import hypothesis as _hypothesis
except ImportError as _err:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        "treewalk.testing needs hypothesis, which is not installed: "
        'pip install "jax-treewalk[testing]"'
    ) from _err

del _hypothesis

from ._kinds import nnx_node  # noqa: E402
from ._laws import check_key_deterministic as check_key_deterministic  # noqa: E402
from ._laws import check_laws as check_laws  # noqa: E402
from ._laws import check_pure as check_pure  # noqa: E402
from ._laws import check_structure_preserving as check_structure_preserving  # noqa: E402
from ._nodes import Keyed as Keyed  # noqa: E402
from ._nodes import Pair as Pair  # noqa: E402
from ._nodes import Static as Static  # noqa: E402
from ._nodes import Unkeyed as Unkeyed  # noqa: E402
from ._nodes import eqx_node  # noqa: E402
from ._nodes import trees_equal as trees_equal  # noqa: E402
from ._params import params_trees as params_trees  # noqa: E402
from ._strategies import leaves as leaves  # noqa: E402
from ._strategies import paths_of as paths_of  # noqa: E402
from ._strategies import pytrees as pytrees  # noqa: E402
from ._strategies import selectors as selectors  # noqa: E402
from ._traced import check_commutes_with_jit as check_commutes_with_jit  # noqa: E402
from ._traced import check_commutes_with_vmap as check_commutes_with_vmap  # noqa: E402
from ._values import check_idempotent as check_idempotent  # noqa: E402
from ._values import check_matches_reference as check_matches_reference  # noqa: E402
from ._values import check_only_selected as check_only_selected  # noqa: E402

__all__ = [
    "Keyed",
    "Pair",
    "Static",
    "Unkeyed",
    "check_commutes_with_jit",
    "check_commutes_with_vmap",
    "check_idempotent",
    "check_key_deterministic",
    "check_laws",
    "check_matches_reference",
    "check_only_selected",
    "check_pure",
    "check_structure_preserving",
    "leaves",
    "paths_of",
    "params_trees",
    "pytrees",
    "selectors",
    "trees_equal",
]


def __getattr__(name: str) -> Any:
    # `EqxNode` and `NnxNode` subclass `eqx.Module` and `nnx.Module`: made on first use,
    # so that importing treewalk.testing imports no framework.
    if name in ("EqxNode", "NnxNode"):
        cls = eqx_node() if name == "EqxNode" else nnx_node()
        if cls is not None:
            return cls
    raise AttributeError(f"module 'treewalk.testing' has no attribute {name!r}")

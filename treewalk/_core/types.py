"""The types in treewalk's signatures, named once so that type checkers and the docs
know them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

#: Any JAX pytree: a container of containers and leaves (dicts, lists, tuples, Equinox
#: and Flax NNX modules, `nnx.State`, registered nodes) or a single leaf. Spelled `Any`
#: for type checkers: a pytree's structure is not something they can check.
PyTree: TypeAlias = Any

#: JAX's `is_leaf`: `is_leaf(node) -> bool`, true where flattening stops (or `None`).
IsLeaf: TypeAlias = Callable[[Any], bool] | None


class ReplaceFn(Protocol):
    """What [`tw.replace`][treewalk.replace] calls on each selected node:
    `fn(path, node, key) -> new node`.

    `path` is the node's key path, `node` the node (the bare value, for a value inside a
    box), `key` an independent PRNG key for this node, or `None` when `replace` was
    given no `key=`. Any function of three arguments fits, a lambda included. `tw.zeros`,
    `tw.ones`, `tw.constant(v)`, `tw.initializer(init)` and everything in `tw.init` do.

    An `fn` may also define any of these methods, which `replace` uses when present:

    - `tw_call(n, key)`: called instead of `fn(n.path, n.node, key)`; `n` is the node's
      [`tw.Node`][treewalk.Node], with `n.parent` (the enclosing layer), `n.segs` and
      `n.outer` (the box). `tw.init` reads a bias's fan-in from its layer so.
    - `tw_signature(n) -> hashable | None`: nodes with equal signatures may be drawn in
      one batch; `None` means "not batchable".
    - `tw_batched(nodes, keys, signature) -> array[len(nodes), ...]` (or a sequence of
      `len(nodes)` arrays): draw the nodes of one signature at once; `keys` is a typed
      key array (or `None` without `key=`). The result must equal calling `fn` node by
      node with the same keys.

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw

        def halve(path, node, key):
            return node / 2

        fn: tw.ReplaceFn = halve
        assert tw.replace({"w": jnp.ones(2)}, "w", fn)["w"][0] == 0.5
        ```
    """

    def __call__(self, path: Any, node: Any, key: Any, /) -> Any: ...

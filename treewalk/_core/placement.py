"""Where a new array goes: the sharding a leaf lives in, and how a replacement is laid out
there (eagerly moved, or constrained under `jax.jit`)."""

from __future__ import annotations

from typing import Any

import jax
from jax.core import Tracer
from jax.experimental.shard_alike import shard_alike
from jax.sharding import AxisType, NamedSharding, PartitionSpec, SingleDeviceSharding


class _EagerTypes(dict[type, bool]):
    def __missing__(self, t: type) -> bool:
        # Concrete JAX arrays subclass `jax.Array`; tracers are `jax.Array`s to isinstance
        # only. Decided per type, without making an array (that would start the backend).
        hit = self[t] = issubclass(t, jax.Array) and not issubclass(t, Tracer)
        return hit


#: `eager[type(x)]`: is `x` a concrete (not traced) JAX array?
eager = _EagerTypes()


def sharding_of(node: Any) -> Any:
    """The sharding over several devices that `node` lives in, as far as it is known here.

    A concrete array or a `ShapeDtypeStruct` gives its own `.sharding`; a traced array
    (under `jax.jit`) gives the sharding of its abstract value, whose mesh is abstract and
    whose spec is only known for `Explicit` mesh axes. `None` for anything on one device.
    """
    if eager[type(node)] and type(node.sharding) is SingleDeviceSharding:
        return None  # the common case, decided without the calls below
    if isinstance(node, Tracer):
        try:
            sharding = jax.typeof(node).sharding
        except Exception:
            return None
        mesh = getattr(sharding, "mesh", None)
        return None if mesh is None or mesh.empty or mesh.size == 1 else sharding
    sharding = getattr(node, "sharding", None)
    if sharding is None or isinstance(sharding, SingleDeviceSharding):
        return None
    try:
        return None if len(sharding.device_set) == 1 else sharding
    except Exception:
        return None


def _explicit(sharding: Any) -> bool:
    types = getattr(getattr(sharding, "mesh", None), "axis_types", ())
    return any(t == AxisType.Explicit for t in types)


def constrain(x: Any, sharding: Any) -> Any:
    """Under a trace, lay `x` out in `sharding` (`reshard` on `Explicit` mesh axes)."""
    if _explicit(sharding):
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def place(x: Any, node: Any) -> Any:
    """Give `x`, the array that replaces `node`, the sharding `node` has.

    Eagerly a result that is elsewhere is moved (`device_put`). Under `jax.jit` the
    layout is constrained instead: to the traced sharding on `Explicit` mesh axes, to the
    node's own sharding when it is concrete, and with `shard_alike` on `Auto` axes (where
    the input's layout is only known to the compiler).
    """
    if eager[type(node)] and type(node.sharding) is SingleDeviceSharding:
        return x  # the common case, decided without the calls below
    sharding = sharding_of(node)
    if sharding is None or getattr(x, "shape", None) != getattr(node, "shape", None):
        return x
    if isinstance(node, Tracer):
        if not isinstance(x, Tracer | jax.Array):
            return x
        if _explicit(sharding):
            return jax.sharding.reshard(x, sharding)
        return shard_alike(x, node)[0]
    if isinstance(x, Tracer):
        return constrain(x, sharding)
    if not isinstance(x, jax.Array) or x.sharding == sharding:
        return x
    return jax.device_put(x, sharding)


def stack_sharding(node: Any, traced: bool) -> tuple[bool, Any]:
    """May `node` be drawn in a stack with others of its shape, and in which layout?

    `(batchable, sharding of the stack [n, *shape] or None)`. A node spread over several
    devices is batchable only under a trace whose sharding is known there (a concrete or
    abstract array's own, or an `Explicit` mesh's): the stack is then laid out with a
    leading replicated axis, so every device draws only its own slices. Eager stacks would
    be drawn whole on one device, and `Auto`-traced inputs hide their layout, so both are
    drawn one by one.
    """
    sharding = sharding_of(node)
    if sharding is None:
        return True, None
    if isinstance(node, Tracer):
        if not _explicit(sharding):
            return False, None
    elif not traced or not isinstance(sharding, NamedSharding):
        return False, None
    spec = tuple(sharding.spec) + (None,) * (len(node.shape) - len(sharding.spec))
    return True, NamedSharding(sharding.mesh, PartitionSpec(None, *spec))


#: Up to this many rows, an eager stack is cut (`unstack`) and a fill is made
#: (`tw.zeros`) without a program compiled for its number of rows: a first call then
#: compiles nothing new for each group size (cutting 96 rows with `list(x)` compiled for
#: 1 s on a 2-core CPU). Beyond it, such a program pays: cutting 2,000 rows took 16 ms
#: warm with it, 24 ms row by row, and putting 2,000 fills on the device 52 ms.
FEW_ROWS = 256


def unstack(x: Any) -> list[Any]:
    """The rows of a stack `x[n, ...]`, as separate arrays: an eager JAX stack of up to
    `FEW_ROWS` rows row by row (one small program, indexed by a dynamic row number),
    anything else by `list(x)`."""
    if eager[type(x)] and x.shape[0] <= FEW_ROWS:
        return [jax.lax.dynamic_index_in_dim(x, i, keepdims=False) for i in range(x.shape[0])]
    return list(x)

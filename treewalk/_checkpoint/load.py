"""`tw.load`: put weights from a checkpoint (PyTorch, safetensors, another framework's
params) into a model, with names and weight layouts converted from the source's
convention, everything checked first."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, NamedSharding, Sharding
from jax.tree_util import keystr

from .._core.errors import LoadError, LoadWarning
from .._core.types import PyTree
from .._frameworks import box_partitioning
from .._ops.replace import replace
from .._select.atoms import arrays
from .leaves import Leaf, held, index_key, on_host
from .plan import LoadPlan, plan, tied_to
from .rules import Layouts, Rename
from .sources import Source, staging
from .step import Step


def load_plan(
    tree: PyTree,
    source: Any,
    *,
    convention: str | None = None,
    rename: Rename = None,
    layouts: Layouts = None,
    into: str | None = None,
) -> LoadPlan:
    """The plan [`tw.load`][treewalk.load] would follow, to look at before loading.

    Nothing is read but the source's keys, shapes and dtypes, and nothing is raised for a
    problem: every row says what would happen. `print` it for a table of destination
    path, source key, conversion (rename, transpose, reshape, cast) and status: `load`,
    `tied` (the same array as another destination being loaded), `skip`, or a problem —
    `missing` (nothing loads into this destination array), `unused` (no destination for
    this source key), `mismatch` (shape or dtype), `twice` (two source keys for one
    array).

    **Arguments:** as for `tw.load`.

    **Returns:**

    A `LoadPlan`; `.problems(strict)` lists the rows that would stop `tw.load`.

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import numpy as np
        import treewalk as tw

        model = eqx.nn.Linear(3, 2, key=jax.random.key(0))
        state_dict = {"weight": np.ones((2, 3), np.float32), "bias": np.zeros(2)}
        print(tw.load_plan(model, state_dict, convention="torch"))
        ```

        prints

        ```text
        destination  source key  conversion             status
        weight       weight                             load
        bias         bias        cast float64->float32  load
        torch -> equinox: 2 load
        ```
    """
    return plan(tree, source, convention=convention, rename=rename, layouts=layouts, into=into)


def load(
    tree: PyTree,
    source: Any,
    *,
    convention: str | None = None,
    rename: Rename = None,
    layouts: Layouts = None,
    strict: bool = True,
    into: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> PyTree:
    """A new tree with the arrays of `source` put in at the matching paths.

    **How keys match.** A source key is split into segments on `.` and `/`
    (`encoder.layers.0.weight` is `encoder/layers/0/weight`), `rename` is applied, and the
    result is matched against each destination array's `tw.path_str`, in either of two
    spellings: with the destination's own last name (`fc1/kernel`), or with the name the
    source's convention gives that role (`fc1/weight` for a PyTorch source into a Flax
    `Linear`). So a model whose attributes are named like the source's modules loads
    with no rules.

    **Conversions**, when `convention` differs from the destination's, for the layers
    whose convention is known — Linear/Dense, NNX LinearGeneral, Conv and ConvTranspose
    1-3D, LayerNorm, GroupNorm, BatchNorm, RMSNorm, Embedding/Embed, PyTorch's
    MultiheadAttention (packed projections) into Equinox's or NNX's, LSTM/GRU into
    Equinox cells (summed biases): the weight name (`weight`, `kernel`,
    `w`, `scale`, `embedding`, `embeddings`, `offset`, `running_mean`, ...), the weight
    layout (PyTorch and Equinox `(out, in, *kernel)`, Flax and Haiku `(*kernel, in,
    out)`; the transposed convolutions' own, see the checkpoints page), decided by the
    destination layer's type or, for linen and Haiku param dicts, its names — never by a
    name inside a module nor by shapes, so a square matrix loads the right way round.
    Vectors (biases, scales) are reshaped when only singleton axes differ (an Equinox
    conv bias is `(out, 1, 1)`). Every array is cast to the destination's dtype; float to
    int is refused. PyTorch's `num_batches_tracked` keys are skipped.

    **Checked first.** The whole plan is made from the source's keys, shapes and dtypes
    before any data is read: with `strict=True` one `tw.LoadError` lists every destination
    array nothing loads into, every source key nothing uses, and every shape or dtype
    mismatch after conversion. `tw.load_plan` shows the plan without loading.

    **Placement.** Boxes stay (an NNX `Param`, a linen `Partitioned`, with their
    metadata); a sharded destination array gets the new one in its sharding, each device
    given only its shard; an abstract destination (`jax.ShapeDtypeStruct` leaves from
    `eqx.filter_eval_shape`, `nnx.eval_shape`, `jax.eval_shape`) is materialised straight
    from the source. Files are read one tensor at a time, and a shard as only its part of
    the file (through a transpose, flip, reshape or packed rows too; once when two devices
    hold it). Across processes (`jax.distributed`) each process reads only its own
    devices' shards. What was read is logged at DEBUG level on the `treewalk` logger: the
    bytes of array data read, and the bytes the loaded arrays hold on this process's
    devices.

    **Arguments:**

    - `tree`: the destination model or params, or an Equinox model and its
      `eqx.nn.State` as a pair `(model, state)` (BatchNorm statistics load into the
      state; the pair comes back). It is never changed.
    - `source`: a flat mapping `{str: array}` (numpy, JAX, or PyTorch tensors: a
      `state_dict()`), a PyTorch `nn.Module` (its state_dict, converted by its layers'
      types), any pytree (another framework's model or params), or the path of a
      `.safetensors` or `.npz` file (reading a safetensors file shard by shard, for a
      sharded destination along an axis other than its first, needs `pip install
      "jax-treewalk[checkpoints]"`).
    - `convention`: the framework convention the source follows, `"torch"`, `"equinox"`,
      `"flax"` (linen and NNX) or `"haiku"`. `None`: a pytree source's own framework,
      else the destination's (nothing converted but vector reshapes and casts).
    - `rename`: `(regex, replacement)` pairs applied in order with `re.sub` to the source
      key written with `/` (`[(r"^0/", "layers/0/")]`), or a callable given that key
      and returning the destination path (`"layers/0/weight"`), or `None` to skip the
      key. The result may use the source's names or the destination's.
    - `layouts`: `{regex: layout}`, how the source arrays whose keys (written with `/`)
      the regex finds are laid out: each axis named, `o` out, `i` in, `k` the kernel axes
      (`"io"` for a transformers `Conv1D`), or `"as-is"` to load them unconverted. By
      default a source's own layer types decide (a pytree's, an `nn.Module`'s), else its
      convention. A weight nothing decides (a layer type treewalk does not know, a
      square weight with no `convention` given) is a `LoadError`, not a guess.
    - `strict`: `True` (default): any problem raises. `False`: destination arrays nothing
      loads into keep their values and unused source keys are ignored; shape and dtype
      mismatches still raise (skip such keys with `rename`).
    - `into`: the destination's convention when it cannot be told from the tree (e.g. a
      plain dict named like linen or Haiku params); detected by default.
    - `mesh`: for abstract destinations whose partitioning names mesh axes but no concrete
      mesh (NNX `with_partitioning` boxes, `ShapeDtypeStruct`s on an abstract mesh): the
      mesh to place them on; by default the one `jax.set_mesh` set.

    **Returns:**

    The new tree, of the destination's structure.

    **Raises:**

    `tw.LoadError` (with `.plan`), `tw.ArgumentError` (unreadable source, bad
    `convention`).

    !!! Example

        ```python
        import flax.nnx as nnx
        import numpy as np
        import treewalk as tw

        # A PyTorch `nn.Linear(3, 2)` state_dict: weight (out, in).
        state_dict = {"weight": np.arange(6.0).reshape(2, 3), "bias": np.array([1.0, 2.0])}
        model = tw.load(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), state_dict, convention="torch")
        assert model.kernel[...].shape == (3, 2)  # (in, out)
        assert (model.kernel[...] == state_dict["weight"].T).all()
        ```
    """
    p = plan(tree, source, convention=convention, rename=rename, layouts=layouts, into=into)
    bad = p.problems(strict)
    if bad:
        raise _error(p, p.error_message(strict))
    todo = {s.leaf.key: s for s in p.steps if s.status == "load" and s.leaf is not None}
    if not todo:
        _left_out(p)
        return tree
    new = _read(p, todo, mesh)
    _check_ties(p, new)
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug(*_report(p.source, new))
    _set_after_load(p, new)
    _left_out(p)
    return replace(tree, arrays, lambda path, node, key: new.get(keystr(path), node), strict=False)


def _report(src: Source, new: dict[str, Any]) -> tuple[Any, ...]:
    """The debug record of what one `tw.load` read: its message and its numbers."""
    holds = sum(part.nbytes for array in new.values() for _, part in held(array))
    return (
        "tw.load: read %d bytes of array data from %s; the %d arrays loaded hold %d bytes "
        "on the devices of this process (%d of %d)",
        src.bytes_read,
        getattr(src, "path", type(src).__name__),
        len(new),
        holds,
        jax.process_index(),
        jax.process_count(),
    )


def _error(p: LoadPlan, message: str) -> LoadError:
    err = LoadError(message)
    err.plan = p
    return err


def _left_out(p: LoadPlan) -> None:
    """With `strict=False`: a `tw.LoadWarning` saying what was left unloaded."""
    missing = [s.destination for s in p.steps if s.status == "missing"]
    unused = [s.key for s in p.steps if s.status == "unused"]
    if not (missing or unused):
        return
    shown = ", ".join(map(repr, missing[:3])) + (", ..." if len(missing) > 3 else "")
    warnings.warn(
        f"tw.load(strict=False): {len(missing)} destination array(s) kept their values"
        + (f" ({shown})" if missing else "")
        + f" and {len(unused)} source key(s) were not used; tw.load_plan(...) lists them.",
        LoadWarning,
        stacklevel=3,
    )


def _set_after_load(p: LoadPlan, new: dict[str, Any]) -> None:
    """Set the flags and counters of the layers whose statistics were loaded (an
    `eqx.nn.State`'s BatchNorm, a Haiku BatchNorm's averages: inference then uses the
    statistics as they are)."""
    loaded = {s.leaf.segments[:-1] for s in p.steps if s.status == "load" and s.leaf is not None}
    for leaf in p.after_load:
        if leaf.segments[:-1] not in loaded:
            continue
        value = leaf.after_load
        if isinstance(value, Leaf):  # the value another array loaded (Haiku's `hidden`)
            new[leaf.key] = jax.numpy.array(new[value.key], copy=True)
        else:
            new[leaf.key] = jax.numpy.full(leaf.node.shape, value, leaf.node.dtype)


def _check_ties(p: LoadPlan, new: dict[str, Any]) -> None:
    """A tied destination array given by two source keys: the second must hold what the
    first does (safetensors ties store one tensor; a state_dict lists both). Each process
    compares the shards it holds, reading only those parts of the second key."""
    for tied, loaded in tied_to(p):
        assert tied.key is not None and loaded.leaf is not None and loaded.key is not None
        other = _shards(p.source, tied)
        for index, part in held(new[loaded.leaf.key]):
            first, second = on_host(part), other(index)
            if second.shape == first.shape and np.array_equal(second.astype(first.dtype), first):
                continue
            raise _error(
                p,
                f"tw.load: {tied.destination!r} and {loaded.destination!r} are one array (a "
                f"tie), but the source keys {loaded.key!r} and {tied.key!r} hold different "
                "values; nothing was loaded. Fix: load one of them (skip the other with "
                "rename=[(regex, None)]), or untie the destination.",
            )


#: `tw.load` says at DEBUG level what it read, in each process (the `treewalk` logger).
_log = logging.getLogger(__name__)

#: Arrays for one device are put there in batches of about this many bytes: one
#: `device_put` per batch (not per array), with only one batch on the host at a time.
_BATCH_BYTES = 64 << 20


def _read(p: LoadPlan, todo: dict[str, Step], mesh: Any) -> dict[str, Any]:
    """Every array of the plan, read, converted and placed, by destination `keystr`."""
    src, out = p.source, {}
    batch: list[tuple[str, np.ndarray]] = []
    where: Any = None
    size = 0

    def flush() -> None:
        if batch:
            put = jax.device_put([a for _, a in batch], where)
            out.update(zip([k for k, _ in batch], put, strict=True))
            batch.clear()

    for name, step in todo.items():
        leaf, key = step.leaf, step.key
        assert leaf is not None and key is not None
        if isinstance(leaf.node, np.ndarray):  # a numpy leaf stays numpy (keeps float64)
            out[name] = _own(src, step.build(src.read))
            continue
        sharding = _sharding(leaf.node, leaf.box, mesh)
        if sharding is not None and len(sharding.device_set) > 1:
            out[name] = _sharded(src, step, sharding)
            continue
        if sharding != where or size >= _BATCH_BYTES:
            flush()
            where, size = sharding, 0
        # On the CPU `device_put` may alias a numpy array: only ever hand it our own.
        array = _own(src, step.build(src.read))
        batch.append((name, array))
        size += array.nbytes
    flush()
    return out


def _sharded(src: Source, step: Step, sharding: Sharding) -> jax.Array:
    """The array for `step` in `sharding`, each of this process's devices given (and read)
    only its shard: JAX asks only for the shards of this process's devices."""
    assert step.leaf is not None
    return jax.make_array_from_callback(tuple(step.leaf.node.shape), sharding, _shards(src, step))


def _shards(src: Source, step: Step) -> Callable[[Any], np.ndarray]:
    """`index -> the part of the destination array of step` at that index, read as only
    that part of the source where the conversion allows (`Step.part`), else cut from the
    whole, read once; a part asked for twice (two devices holding the same shard) is read
    once."""
    assert step.leaf is not None
    shape = tuple(step.leaf.node.shape)
    whole: list[np.ndarray] = []
    done: dict[tuple[tuple[int, int, int], ...], np.ndarray] = {}

    def shard(index: Any) -> np.ndarray:  # `Index`; JAX types it `Index | None`
        at = index_key(index, shape)
        if at not in done:
            part = step.part(src.read_index, index)
            if part is None:
                if not whole:
                    whole.append(step.build(src.read))
                part = whole[0][index]
            done[at] = _own(src, part)
        return done[at]

    return shard


def _own(src: Source, array: np.ndarray) -> np.ndarray:
    """`array`, or a copy of it when it may be memory the caller still holds (a mapping
    source's numpy array or PyTorch tensor): the loaded model never shares it."""
    if src.owned or not array.flags.writeable:
        return array
    out = staging(array.shape, array.dtype)
    np.copyto(out, array)
    return out


def _sharding(node: Any, box: Any, mesh: Any) -> Sharding | None:
    """Where the array for `node` goes: its own sharding, else its box's partitioning on
    its box's mesh, `mesh`, or the mesh of `jax.set_mesh`; `None` for the default device."""
    sharding = getattr(node, "sharding", None)
    spec = None
    if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, AbstractMesh):
        spec = sharding.spec  # an abstract model made under `jax.set_mesh`
    elif isinstance(sharding, Sharding):
        return sharding
    elif box is not None:
        part = box_partitioning(box)
        if part is not None:
            spec, box_mesh = part
            if isinstance(spec, Sharding):
                return spec
            mesh = box_mesh if box_mesh is not None and mesh is None else mesh
    if spec is None:
        return None
    if mesh is None or isinstance(mesh, AbstractMesh):
        mesh = jax.sharding.get_mesh()
    if mesh is None or isinstance(mesh, AbstractMesh) or not mesh.shape:
        return None
    return NamedSharding(mesh, spec)

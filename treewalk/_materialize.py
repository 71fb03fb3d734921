"""Abstract models made real: every leaf created in its sharding, by one compiled program
per kind of leaf."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec, Sharding

from ._core.errors import ArgumentError, InitError, NoMatchError, call_user
from ._core.matcher import Matcher
from ._core.node import Node
from ._core.paths import path_str, show_path
from ._core.types import PyTree
from ._frameworks import box_partitioning
from ._ops.query import find
from ._ops.replace import replace
from ._select.algebra import Selector, above, as_selector, brief, predicate

Plan = Mapping[Any, Any]


def _is_abstract(path: Any, node: Any) -> bool:
    return type(node) is jax.ShapeDtypeStruct


#: The leaves `materialize` creates: `jax.ShapeDtypeStruct`s.
abstract = predicate(_is_abstract)


def materialize(
    tree: PyTree,
    init: Any,
    *,
    key: Any = None,
    plan: Plan | None = None,
    mesh: Mesh | None = None,
    key_policy: Literal["path", "split"] = "path",
    strict: bool = True,
) -> PyTree:
    """Initialise an abstract model with every leaf created directly in its sharding.

    `tree` is a model whose arrays are `jax.ShapeDtypeStruct`s, as `eqx.filter_eval_shape`,
    `nnx.eval_shape` or `jax.eval_shape(module.init, ...)` give. Every abstract leaf is
    replaced by `init` (anything `tw.replace` takes as `fn`) inside `jax.jit` programs
    whose `out_shardings` are the leaves' shardings, so each device only ever computes
    and holds its own shards: no leaf is materialised whole on one device, and the
    compiled programs have no collectives (with `tw.initializer`, the helpers and
    `tw.init`; a custom `fn` is as communication-free as what it computes).

    **One program per kind of leaf.** Leaves of one init entry, `tw_signature` (shape,
    dtype, and what else the init reads: `tw.init`'s fans) and sharding share a program,
    compiled once and called with each leaf's key: a transformer of any depth compiles
    about a dozen small programs, and at any moment memory holds the leaves made so far
    plus one leaf's draw (a 968 MiB model peaks at 1.12x its bytes). An `fn` that
    declares no signature (a plain `fn(path, node, key)`) makes its leaves in one
    program, compiled for memory.

    **Where each leaf's sharding comes from**, first that applies:

    1. `plan`: the first entry whose selector matches the leaf.
    2. The leaf's own `.sharding` (`ShapeDtypeStruct(shape, dtype, sharding=...)`; the spec
       of one on an abstract mesh is used with `mesh`).
    3. Partitioning metadata on the leaf's box: Flax NNX `nnx.with_partitioning`
       (`out_sharding`), linen `nn.with_partitioning` (`Partitioned.names`) and
       `nn.with_logical_partitioning` (through its rules).
    4. Replicated over `mesh` when there is one; otherwise JAX's default device.

    **Values do not depend on the mesh.** A leaf's key comes from `key` and its path
    (`key_policy="path"`), and the draws run with `jax_threefry_partitionable` switched on (the
    default in JAX >= 0.5; set here explicitly for the duration of the call), under which
    random bits depend only on the key and the element's position, not on the layout.
    So one device, an `(8,)` mesh, a `(2, 4)` mesh and several processes give
    bit-identical leaves, equal to `tw.replace(concrete_model, ..., key=key)` with the
    same `init` (under the default `jax_threefry_partitionable=True`).

    **Arguments:**

    - `tree`: the abstract model. Concrete arrays and non-array leaves in it are kept as
      they are; only `ShapeDtypeStruct` leaves are created.
    - `init`: a `fn` for `tw.replace` (`tw.initializer(...)`, `tw.zeros`, `tw.init.*`,
      `fn(path, node, key)`), or a mapping `{selector: fn}` where the first matching
      selector of each leaf decides (e.g. `{"**/bias": tw.zeros, "**": normal}`).
    - `key`: the PRNG key (needed when an `init` draws random values).
    - `plan`: a mapping `{selector: spec}`, each spec a `PartitionSpec` (needs `mesh`), a
      tuple of mesh axis names or `None`s, or a `jax.sharding.Sharding`.
    - `mesh`: the `jax.sharding.Mesh` for specs; by default the one set with
      `jax.set_mesh`, else the one in the boxes' metadata. Across processes this is the
      global mesh (`jax.distributed.initialize`): each process creates only its shards.
    - `key_policy`: how the per-leaf keys are made, as in `tw.replace`.
    - `strict`: a `plan` or `init` entry that matches no abstract leaf is an error
      (`tw.NoMatchError`); pass `False` to allow it.

    **Returns:**

    The model with `jax.Array` leaves, boxes (NNX variables, linen `Partitioned`) rebuilt
    around them with their metadata.

    **Raises:**

    `tw.InitError` when an abstract leaf has no `init`, `tw.ArgumentError` when a spec
    needs a mesh and none is known, `tw.NoMatchError`, and whatever `tw.replace` raises.

    !!! Example

        ```python
        import equinox as eqx
        import jax
        from jax.sharding import PartitionSpec as P
        import treewalk as tw

        mesh = jax.make_mesh((2, 4), ("data", "model"))
        abstract = eqx.filter_eval_shape(eqx.nn.MLP, 64, 64, 256, 3, key=jax.random.key(0))
        model = tw.materialize(
            abstract,
            {"**/bias": tw.zeros, "**/weight": tw.initializer(jax.nn.initializers.lecun_normal())},
            key=jax.random.key(1),
            plan={"**/weight": P("model", "data"), "**/bias": P("model")},
            mesh=mesh,
        )
        w = model.layers[1].weight
        assert w.sharding.spec == P("model", "data")
        assert w.addressable_shards[0].data.shape == (64, 128)  # each device: 1/8
        ```
    """
    return _Materializer(tree, init, plan=plan, mesh=mesh, key_policy=key_policy, strict=strict)(
        key
    )


class _Materializer:
    """The pieces of one `materialize` call, so tests can look at the compiled program."""

    def __init__(
        self,
        tree: Any,
        init: Any,
        *,
        plan: Plan | None,
        mesh: Mesh | None,
        key_policy: Literal["path", "split"],
        strict: bool,
    ) -> None:
        if mesh is None:
            context = jax.sharding.get_mesh()
            mesh = None if context.empty else context
        if mesh is not None and not isinstance(mesh, Mesh):
            raise ArgumentError(
                f"mesh= must be a jax.sharding.Mesh (e.g. jax.make_mesh((8,), ('x',))), got "
                f"{type(mesh).__name__}."
            )
        self.mesh = mesh
        self.key_policy: Literal["path", "split"] = key_policy
        self.strict = strict
        entries = init.items() if isinstance(init, Mapping) else [(abstract, init)]
        # Each entry gets the abstract leaves its selector covers (picks, or lie inside a
        # node it picks), as `tw.mask` reads a selector: `{"encoder": fn}` is the encoder.
        self.inits: list[tuple[Selector, Any]] = [
            (abstract if s is abstract else Covered(as_selector(s)) & abstract, f)
            for s, f in entries
        ]
        # Give every abstract leaf its concrete sharding (or none): a plain pass, no jit.
        resolve = _Resolve(plan or {}, mesh)
        placed = replace(tree, abstract, resolve, strict=False)
        if strict:
            for sel, n in zip(resolve.plan, resolve.used, strict=True):
                if not n:
                    raise NoMatchError(
                        f"plan entry {sel!r} matched no abstract leaf. Fix the selector, or "
                        f"pass strict=False to allow unused plan entries."
                    )
        if strict:
            for (sel, _), given in zip(self.inits, entries, strict=True):
                if sel is not abstract and not find(placed, sel):
                    raise NoMatchError(
                        f"tw.materialize: init entry {brief(as_selector(given[0]))} covers "
                        f"no abstract leaf (a selector picks leaves, or layers whose leaves "
                        f"it covers). Fix the selector, or pass strict=False."
                    )
        leaves, self.treedef = jax.tree_util.tree_flatten(placed)
        self.leaves = leaves
        self.where = [i for i, x in enumerate(leaves) if type(x) is jax.ShapeDtypeStruct]
        if strict and not self.where:
            raise NoMatchError(
                "tw.materialize: the tree has no jax.ShapeDtypeStruct leaves to create. Build "
                "the model abstractly (eqx.filter_eval_shape, nnx.eval_shape, "
                "jax.eval_shape(module.init, ...)), or pass strict=False."
            )
        self.shardings = [leaves[i].sharding for i in self.where]
        # The programs are traced on `Auto` mesh axes: there the compiler shards the random
        # draws themselves. (On `Explicit` axes a draw is typed replicated, so every device
        # would compute it whole and keep its slice.) The results are relabelled after.
        self.out_shardings = [_auto(s) for s in self.shardings]
        inner = list(leaves)
        for i, sharding in zip(self.where, self.out_shardings, strict=True):
            inner[i] = jax.ShapeDtypeStruct(inner[i].shape, inner[i].dtype, sharding=sharding)
        self.placed = jax.tree_util.tree_unflatten(self.treedef, inner)
        self.position = {id(inner[i]): j for j, i in enumerate(self.where)}
        devices = mesh.devices.flat if mesh is not None else jax.devices()
        self.options = cpu_options() if next(iter(devices)).platform == "cpu" else None

    def programs(self, key: Any) -> list[tuple[Any, list[tuple[list[int], list[Any]]]]]:
        """The programs that make the leaves, each with its calls: `(jitted, [(positions
        in where, the keys' data), ...])`. A kind of leaf (one init, signature and
        sharding: a transformer has a dozen) is one program, called once per leaf with
        that leaf's key; the leaves whose `fn` declares no signature are one program."""
        drawn = self._record(key)
        kinds: dict[Any, list[int]] = {}
        for j, (entry, fn, n, _) in enumerate(drawn):
            sign = getattr(fn, "tw_signature", None)
            sig = None if sign is None else call_user(repr(fn), sign, n.path, n)
            kinds.setdefault(None if sig is None else (entry, sig, n.node.sharding), []).append(j)
        out = []
        for kind, js in kinds.items():
            where = [self.position[id(drawn[j][2].node)] for j in js]
            draws = [(drawn[j][1], drawn[j][2]) for j in (js if kind is None else js[:1])]
            jitted = jax.jit(
                functools.partial(_draw_all, draws),
                out_shardings=[self.out_shardings[w] for w in where[: len(draws)]],
                compiler_options=self.options,
            )
            if kind is None:  # one call: every leaf with its key
                calls = [(where, [drawn[j][3] for j in js])]
            else:  # a call per leaf: the first leaf's program, this leaf's key
                calls = [([w], [drawn[j][3]]) for w, j in zip(where, js, strict=True)]
            out.append((jitted, calls))
        return out

    def _record(self, key: Any) -> list[tuple[int, Any, Node, Any]]:
        """Each abstract leaf's `(init entry, fn, Node, key)`, from a `replace` per entry as
        one eager call would make them: the same selection, order and keys."""
        drawn: list[tuple[int, Any, Node, Any]] = []
        tree = self.placed
        for e, (sel, fn) in enumerate(self.inits):
            record: Any = _Record(e, fn, drawn)
            tree = replace(
                tree, sel, record, key=key, key_policy=self.key_policy, strict=False, check=False
            )
        left = find(tree, abstract)
        if left:
            shown = ", ".join(repr(path_str(p)) for p in left.paths[:5])
            raise InitError(
                f"tw.materialize: {len(left)} abstract leaves have no init, e.g. {shown}. "
                f"Add an entry for them to init= (a catch-all is `'**': fn`)."
            )
        return drawn

    def _context(self) -> contextlib.ExitStack:
        """`jax_threefry_partitionable=True`, and the mesh as JAX's context mesh."""
        stack = contextlib.ExitStack()
        stack.enter_context(jax.threefry_partitionable(True))
        if self.mesh is not None:
            stack.enter_context(jax.set_mesh(_auto_mesh(self.mesh)))
        return stack

    def lower(self, key: Any = None) -> list[Any]:
        """`jax.jit(...).lower(...)` of each program, for its first call."""
        with self._context():
            return [jitted.lower(calls[0][1]) for jitted, calls in self.programs(key)]

    def __call__(self, key: Any = None) -> Any:
        leaves = list(self.leaves)
        with self._context():
            for jitted, calls in self.programs(key):
                for where, keys in calls:
                    # One call at a time: its draws' temporaries are freed before the next.
                    made = jax.block_until_ready(jitted(keys))
                    for j, x in zip(where, made, strict=True):
                        sharding, auto = self.shardings[j], self.out_shardings[j]
                        leaves[self.where[j]] = (
                            x if sharding is auto else jax.device_put(x, sharding)
                        )
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


class _Drawn(jax.ShapeDtypeStruct):
    """What the recording pass leaves for a leaf it has recorded: shaped like it (an init
    of a later entry may read its shape, `tw.init`'s fans), no longer `abstract`."""

    __slots__ = ()


class _Record:
    """`replace` fn of the recording pass: a leaf's `Node` and key, kept for its program."""

    def __init__(self, entry: int, fn: Any, drawn: list[Any]) -> None:
        self.entry, self.fn, self.drawn = entry, fn, drawn
        self.needs_key = getattr(fn, "needs_key", False)

    def __repr__(self) -> str:
        return repr(self.fn)

    def __call__(self, path: Any, node: Any, key: Any) -> Any:  # replace calls `tw_call`
        return self.tw_call(Node(path, node, None, None), key)

    def tw_call(self, n: Node, key: Any) -> Any:
        self.drawn.append((self.entry, self.fn, n, _key_data(key)))
        node = n.node
        return _Drawn(node.shape, node.dtype, sharding=node.sharding)


def _key_data(key: Any) -> Any:
    """A leaf's key as host data and how to rebuild it in a program: numpy arguments
    are the same global value in every process, and committed to no device."""
    if key is None:
        return None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return _Key(np.asarray(jax.random.key_data(key)), jax.random.key_impl(key))
    return _Key(np.asarray(key), None)


class _Key(NamedTuple):
    data: Any  # host data; a traced `uint32` array inside a program
    impl: Any  # `None`: a legacy `uint32[2]` key


jax.tree_util.register_pytree_node(
    _Key, lambda k: ((k.data,), k.impl), lambda impl, c: _Key(c[0], impl)
)


def _draw(fn: Any, n: Node, key: _Key | None) -> Any:
    """Inside a program: `fn`'s array for the leaf at `n`, with `key` rebuilt."""
    k: Any = None
    if key is not None:
        k = key.data if key.impl is None else jax.random.wrap_key_data(key.data, impl=key.impl)
    tw_call = getattr(fn, "tw_call", None)
    if tw_call is not None:
        out = call_user(repr(fn), tw_call, n.path, n, k)
    else:
        out = call_user("init", fn, n.path, n.path, n.node, k)
    node = n.node
    if getattr(out, "shape", None) != node.shape or getattr(out, "dtype", None) != node.dtype:
        raise InitError(
            f"tw.materialize: the init of {show_path(n.path)} returned "
            f"{type(out).__name__} {getattr(out, 'shape', '')}, not an array of shape "
            f"{node.shape} and dtype {node.dtype}. Each init must return an array like the leaf."
        )
    return out


def _draw_all(draws: list[tuple[Any, Node]], keys: list[Any]) -> list[Any]:
    return [_draw(fn, n, k) for (fn, n), k in zip(draws, keys, strict=True)]


@functools.cache
def cpu_options() -> dict[str, Any]:
    """XLA:CPU's compile options for the programs. Its default scheduler, tuned for
    running ops at once, starts every draw of a program before the arithmetic that turns
    any draw's bits into values, so all the bits are alive together (one program for a
    968 MiB model peaked at 2.3x its bytes); the memory-optimised one finishes a leaf
    before the next, with the same values. The option's name depends on the jaxlib
    (`xla_cpu_scheduler_type` now, a flag up to about 0.8); asked once per process."""
    candidates: list[dict[str, Any]] = [
        {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"},
        {"xla_cpu_enable_concurrency_optimized_scheduler": False},
    ]
    for options in candidates:
        try:
            jax.jit(lambda: 0).lower().compile(compiler_options=options)
        except Exception:  # no such option in this jaxlib
            continue
        return options
    return {}


def _auto_mesh(mesh: Mesh) -> Mesh:
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def _auto(sharding: Any) -> Any:
    """`sharding` on the `Auto`-axes twin of its mesh."""
    if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, Mesh):
        mesh = _auto_mesh(sharding.mesh)
        if mesh is not sharding.mesh:
            return NamedSharding(mesh, sharding.spec, memory_kind=sharding.memory_kind)
    return sharding


class Covered(Selector):
    """The leaves `selector` covers: those it picks, and those inside a node it picks (how
    `tw.mask` reads a selector). Not an atom of its own: `materialize` checks its entries."""

    __slots__ = ("selector",)

    def __init__(self, selector: Selector) -> None:
        self._init(selector=selector)

    def match(self, n: Node) -> bool:
        p: Node | None = n
        while p is not None:
            if self.selector.match(p):
                return True
            p = p.parent
        return False

    def compile(self, wrap: Any = None) -> Matcher:
        m = self.selector.compile()
        covered = above(m)
        return Matcher(lambda n: m(n) or covered(n.parent))

    def fields(self) -> tuple[Any, ...]:
        return (self.selector,)

    def text(self, parts: list[str], cap: int | None) -> str:
        return repr(self.selector)


class _Resolve:
    """`replace` fn: the abstract leaf with its concrete sharding (see `materialize`)."""

    def __init__(self, plan: Plan, mesh: Mesh | None) -> None:
        self.plan = [as_selector(s) for s in plan]
        # A plan entry is asked as an init entry is: the leaves its selector covers.
        self.covers = [Covered(s).compile() for s in self.plan]
        self.specs = list(plan.values())
        self.used = [0] * len(self.plan)
        self.mesh = mesh

    def __repr__(self) -> str:
        return "tw.materialize's sharding plan"

    def tw_call(self, n: Node, key: Any) -> Any:
        node = n.node
        sharding = None
        for j, sel in enumerate(self.plan):
            if self.covers[j].test(n):
                self.used[j] += 1
                sharding = self._sharding(n, self.specs[j], None, f"plan entry {sel!r}")
                break
        else:
            own = node.sharding
            if own is not None:
                sharding = self._sharding(n, own, None, "its own .sharding")
            elif n.outer is not None and (meta := box_partitioning(n.outer)) is not None:
                sharding = self._sharding(n, meta[0], meta[1], "its box's partitioning")
            elif self.mesh is not None:
                sharding = NamedSharding(self.mesh, PartitionSpec())
        return jax.ShapeDtypeStruct(node.shape, node.dtype, sharding=sharding)

    def __call__(self, path: Any, node: Any, key: Any) -> Any:
        return self.tw_call(Node(path, node, None, None), key)

    def _sharding(self, n: Node, spec: Any, box_mesh: Any, where: str) -> Sharding:
        if isinstance(spec, NamedSharding) and not isinstance(spec.mesh, Mesh):
            spec = spec.spec  # on an abstract mesh: only the spec is known
        if isinstance(spec, Sharding):
            return spec
        if spec is None or isinstance(spec, tuple | list):
            spec = PartitionSpec(*(spec or ()))
        if not isinstance(spec, PartitionSpec):
            raise ArgumentError(
                f"tw.materialize: {where} gives {type(spec).__name__} {spec!r:.60} for "
                f"{show_path(n.path)}; use a PartitionSpec, a tuple of mesh axis names or a "
                f"jax.sharding.Sharding."
            )
        mesh = self.mesh if self.mesh is not None else box_mesh
        if not isinstance(mesh, Mesh):
            raise ArgumentError(
                f"tw.materialize: {where} gives {spec} for {show_path(n.path)} but no mesh is "
                f"known. Pass mesh=jax.make_mesh(...) or call under `with jax.set_mesh(mesh):`."
            )
        return NamedSharding(mesh, spec)

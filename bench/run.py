"""treewalk against the tools users would pick instead, side by side, with ratios.

    python bench/run.py            # full mode (minutes; the 2,000-leaf per-leaf jit is extra)
    python bench/run.py --quick    # small trees, seconds: the CI smoke test
    python bench/run.py --slow     # full mode plus the per-leaf jit at 2,000 leaves (~5 min)
    python bench/run.py --only 2,4 # some cases only
    python bench/run.py --only 8   # realistic models against hand-written code

Every time is the median of several runs after a warm-up; eager results are
`block_until_ready`'d; compile times use a fresh `jax.jit` object (and a fresh function)
each time. The ratio column is `time / treewalk's time` for the same case and tree, so a
ratio above 1 means the alternative is slower than treewalk.

Case 6 (peak memory) runs each variant in its own subprocess (`--mem-worker`) and reads
`resource.getrusage(RUSAGE_SELF).ru_maxrss`; it reports the peak *above* the process's
resident memory just before the model is made, divided by the model's bytes.

Case 10 (`tw.load` and `tw.export` across processes) runs one process with 4 CPU devices,
then two (`jax.distributed` on localhost, gloo) with 2 each (`--load-worker`); per process
it reports the bytes read and the peak resident memory above the process's before the
load, against the bytes of the distinct shards its devices hold (its share).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

ROWS: list[Row] = []


@dataclass
class Row:
    case: str
    tree: str
    tool: str
    value: float  # seconds, or a memory ratio for case 6
    unit: str = "s"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- timing


def block(x: Any) -> Any:
    return jax.block_until_ready(x)  # one batched wait for all the arrays


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: bool = True) -> float:
    """Median wall time of `fn()`, after `warmup` calls. With `sync`, the result's arrays
    are waited for (eager dispatch is asynchronous); queries that compute nothing on the
    device pass `sync=False`, so that flattening their result is not timed."""
    for _ in range(warmup):
        block(fn())
    times = []
    gc.collect()
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if sync:
            block(out)
        times.append(time.perf_counter() - t0)
        del out
    return statistics.median(times)


def record(case: str, tree: str, tool: str, value: float, **kw: Any) -> None:
    ROWS.append(Row(case, tree, tool, value, **kw))
    unit = kw.get("unit", "s")
    shown = f"{value * 1e3:10.2f} ms" if unit == "s" else f"{value:10.3f} {unit}"
    print(f"  {case:<5} {tree:<28} {tool:<44} {shown}", flush=True)


def run_tools(
    case: str, tree: str, tools: dict[str, Callable[[], Any]], repeats: int, sync: bool = True
) -> None:
    for tool, fn in tools.items():
        record(case, tree, tool, median_time(fn, repeats, sync=sync))


def paused(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` with Python's cyclic garbage collector paused, as treewalk's walks do."""

    def run() -> Any:
        gc.disable()
        try:
            return fn()
        finally:
            gc.enable()

    return run


# --------------------------------------------------------------------------- trees


def small_arrays(n: int, shape: tuple[int, ...]) -> list[jax.Array]:
    """`n` distinct arrays of `shape`, made with one device call."""
    return list(
        jnp.arange(n * max(1, int(jnp.prod(jnp.array(shape)))), dtype=jnp.float32).reshape(
            n, *shape
        )
        / 7.0
    )


def dict_layers(n_layers: int) -> dict[str, Any]:
    """`{"layer_i": {"kernel": (8, 8), "bias": (8,)}}`: 2 leaves a layer."""
    ks, bs = small_arrays(n_layers, (8, 8)), small_arrays(n_layers, (8,))
    return {f"layer_{i}": {"kernel": ks[i], "bias": bs[i]} for i in range(n_layers)}


def nested_dict(n_leaves: int) -> dict[str, Any]:
    """Many layers of small arrays, 4 levels deep: blocks / layers / {dense, norm} / leaves."""
    per_layer = 4
    n_layers = max(1, n_leaves // per_layer)
    arrs = small_arrays(n_layers * per_layer, (4,))
    blocks: dict[str, Any] = {}
    for i in range(n_layers):
        a = arrs[i * per_layer : (i + 1) * per_layer]
        layer = {"dense": {"kernel": a[0], "bias": a[1]}, "norm": {"scale": a[2], "bias": a[3]}}
        blocks.setdefault(f"block_{i // 50}", {})[f"layer_{i % 50}"] = layer
    return {"encoder": blocks}


def eqx_linears(n: int, size: int = 8) -> Any:
    import equinox as eqx

    class Stack(eqx.Module):
        layers: list[eqx.nn.Linear]

    one = eqx.nn.Linear(size, size, key=jax.random.key(0))
    ws, bs = small_arrays(n, (size, size)), small_arrays(n, (size,))
    layers = [
        eqx.tree_at(lambda lin: (lin.weight, lin.bias), one, (ws[i], bs[i])) for i in range(n)
    ]
    return Stack(layers)


# --------------------------------------------------------------------------- cases


def is_bias(path: Any) -> bool:
    last = path[-1]
    return getattr(last, "key", getattr(last, "name", None)) == "bias"


def case1(quick: bool, repeats: int) -> None:
    import treewalk as tw

    n = 2_000 if quick else 100_000
    tree = nested_dict(n)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    label = f"nested dict, {len(leaves):,} leaves"
    print(f"case 1: walk overhead, identity over every leaf ({label})")
    ident = lambda p, x, k: x  # noqa: E731
    # A new leaf for every leaf, found by a dict lookup (no device call): what it costs
    # to rebuild the whole tree, which the identity (nothing changed) does not pay.
    other = dict(zip(map(id, leaves), jax.tree_util.tree_leaves(nested_dict(n)), strict=True))
    swap = lambda p, x, k=None: other[id(x)]  # noqa: E731

    def twp() -> Any:
        return jax.tree_util.tree_map_with_path(lambda p, x: x, tree)

    def floor() -> Any:
        return jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_flatten(tree)[0])

    def path_floor() -> Any:
        flat, td = jax.tree_util.tree_flatten_with_path(tree)
        return td.unflatten([x for _, x in flat])

    run_tools(
        "1",
        label,
        {
            "treewalk replace(tw.arrays, identity)": lambda: tw.replace(tree, tw.arrays, ident),
            "tree_map_with_path identity": twp,
            "tree_map_with_path identity, gc paused": paused(twp),
            "floor: tree_flatten + tree_unflatten": floor,
            "floor, gc paused": paused(floor),
            "floor with paths, gc paused": paused(path_floor),
        },
        repeats,
    )
    run_tools(
        "1",
        f"{label}, every leaf new",
        {
            "treewalk replace(tw.arrays, new leaf)": lambda: tw.replace(tree, tw.arrays, swap),
            "tree_map_with_path new leaf": lambda: jax.tree_util.tree_map_with_path(swap, tree),
            "tree_map_with_path new leaf, gc paused": paused(
                lambda: jax.tree_util.tree_map_with_path(swap, tree)
            ),
        },
        repeats,
    )


def case2(quick: bool, repeats: int) -> None:
    import equinox as eqx
    from penzai import pz

    try:
        import sepes as sp  # the `bench` extra; its rows are left out without it
    except ImportError:
        sp = None

    import treewalk as tw

    n = 200 if quick else 2_000
    print(f"case 2: zero every bias, eager ({n:,} layers)")

    def sepes(tools: dict[str, Any]) -> dict[str, Any]:
        return tools if sp is not None else {}

    zl = jnp.zeros_like

    tree = dict_layers(n)
    hand = lambda p, x: zl(x) if is_bias(p) else x  # noqa: E731
    run_tools(
        "2",
        f"dict, {n:,} layers",
        {
            "treewalk replace('**/bias', tw.zeros)": lambda: tw.replace(tree, "**/bias", tw.zeros),
            "tree_map_with_path + zeros_like": lambda: jax.tree_util.tree_map_with_path(
                hand, tree
            ),
            "eqx.tree_at(where, replace_fn=zeros_like)": lambda: eqx.tree_at(
                lambda t: [layer["bias"] for layer in t.values()], tree, replace_fn=zl
            ),
            "penzai at_subtrees_where(bias).apply": lambda: (
                pz.select(tree)
                .at_subtrees_where(lambda kp, x: bool(kp) and is_bias(kp), with_keypath=True)
                .apply(zl)
            ),
        }
        | sepes({"sepes at[...]['bias'].apply": lambda: sp.at(tree)[...]["bias"].apply(zl)}),
        repeats,
    )

    model = eqx_linears(n)
    has_bias = lambda x: isinstance(x, eqx.nn.Linear)  # noqa: E731

    def where(m: Any) -> list[Any]:
        leaves = jax.tree_util.tree_leaves(m, is_leaf=has_bias)
        return [lin.bias for lin in leaves if has_bias(lin)]

    run_tools(
        "2",
        f"eqx, {n:,} Linear",
        {
            "treewalk replace('**/bias', tw.zeros)": lambda: tw.replace(
                model, "**/bias", tw.zeros
            ),
            "tree_map_with_path + zeros_like": lambda: jax.tree_util.tree_map_with_path(
                hand, model
            ),
            "eqx.tree_at(where, replace_fn=zeros_like)": lambda: eqx.tree_at(
                where, model, replace_fn=zl
            ),
            "eqx.tree_at(tw.where(model, '**/bias'), ...)": lambda: eqx.tree_at(
                tw.where(model, "**/bias"), model, replace_fn=zl
            ),
            "penzai at_instances_of(Linear).at(bias)": lambda: (
                pz.select(model).at_instances_of(eqx.nn.Linear).at(lambda lin: lin.bias).apply(zl)
            ),
        }
        | sepes(
            {
                "sepes at['layers'][...]['bias'].apply": lambda: sp.at(model)["layers"][...][
                    "bias"
                ].apply(zl)
            }
        ),
        repeats,
    )

    from flax import nnx

    m = 50 if quick else 500

    class NStack(nnx.Module):
        def __init__(self, n: int, rngs: nnx.Rngs) -> None:
            self.layers = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(n)])

    nmodel = NStack(m, nnx.Rngs(0))

    def nnx_map_state() -> Any:
        graphdef, state = nnx.split(nmodel)
        state = nnx.map_state(
            lambda p, v: v.replace(zl(v.get_value())) if p[-1] == "bias" else v, state
        )
        return nnx.merge(graphdef, state)

    def nnx_filter() -> Any:
        graphdef, bias, rest = nnx.split(nmodel, nnx.PathContains("bias"), ...)
        bias = jax.tree_util.tree_map(zl, bias)
        return nnx.merge(graphdef, bias, rest)

    run_tools(
        "2",
        f"nnx, {m:,} Linear",
        {
            "treewalk replace('**/bias', tw.zeros)": lambda: tw.replace(
                nmodel, "**/bias", tw.zeros
            ),
            "nnx.split + map_state + merge": nnx_map_state,
            "nnx.split(filter) + tree_map + merge": nnx_filter,
        },
        repeats,
    )


def case3(quick: bool, repeats: int) -> None:
    import equinox as eqx
    from penzai import pz

    import treewalk as tw

    n = 500 if quick else 10_000
    print(f"case 3: select every eqx.nn.Linear ({n:,} layers)")
    model = eqx_linears(n, size=4)
    lin = eqx.nn.Linear
    is_lin = lambda x: isinstance(x, lin)  # noqa: E731
    run_tools(
        "3",
        f"eqx, {n:,} Linear",
        {
            "treewalk select(eqx.nn.Linear, outermost=True)": lambda: tw.select(
                model, lin, outermost=True
            ),
            "treewalk select(eqx.nn.Linear) (also inside matches)": lambda: tw.select(model, lin),
            "penzai at_instances_of(Linear).get_sequence": lambda: (
                pz.select(model).at_instances_of(lin).get_sequence()
            ),
            "tree_leaves(is_leaf=isinstance)": lambda: [
                x for x in jax.tree_util.tree_leaves(model, is_leaf=is_lin) if is_lin(x)
            ],
            "tree_flatten_with_path(is_leaf=isinstance)": lambda: [
                (p, x)
                for p, x in jax.tree_util.tree_flatten_with_path(model, is_leaf=is_lin)[0]
                if is_lin(x)
            ],
        },
        repeats,
        sync=False,  # a query: nothing runs on the device
    )


def case4(quick: bool, repeats: int) -> None:
    import optax

    import treewalk as tw

    n = 200 if quick else 2_000
    tree = dict_layers(n)
    n_leaves = len(jax.tree_util.tree_leaves(tree))
    print(f"case 4: keyed normal re-init of every leaf, eager ({n_leaves:,} leaves)")
    key = jax.random.key(0)
    normal = tw.initializer(jax.nn.initializers.normal(1.0))

    def split_index() -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        keys = jax.random.split(key, len(leaves))
        new = [jax.random.normal(keys[i], x.shape, x.dtype) for i, x in enumerate(leaves)]
        return jax.tree_util.tree_unflatten(treedef, new)

    def split_list() -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        keys = list(jax.random.split(key, len(leaves)))
        new = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, new)

    run_tools(
        "4",
        f"dict, {n_leaves:,} leaves",
        {
            "treewalk replace(arrays, normal, key)": lambda: tw.replace(
                tree, tw.arrays, normal, key=key
            ),
            "treewalk replace(..., key_policy='split')": lambda: tw.replace(
                tree, tw.arrays, normal, key=key, key_policy="split"
            ),
            "optax tree_random_like": lambda: optax.tree_utils.tree_random_like(
                key, tree, jax.random.normal
            ),
            "split, keys[i] per leaf": split_index,
            "list(split) per leaf": split_list,
        },
        repeats,
    )


def _jit_tw(normal: Any) -> Callable[..., Any]:
    import treewalk as tw

    return jax.jit(lambda t, k: tw.replace(t, tw.arrays, normal, key=k))


def _jit_per_leaf(normal: Any) -> Callable[..., Any]:
    def f(t: Any, k: Any) -> Any:
        flat, treedef = jax.tree_util.tree_flatten(t)
        ks = jax.random.split(k, len(flat))
        new = [jax.random.normal(ks[i], x.shape, x.dtype) for i, x in enumerate(flat)]
        return jax.tree_util.tree_unflatten(treedef, new)

    return jax.jit(f)


def _jit_case(label: str, tree: Any, tool: str, make: Any, normal: Any, repeats: int) -> None:
    key = jax.random.key(0)
    n = len(jax.tree_util.tree_leaves(tree))
    compiles = []
    compiled: Any = None
    for _ in range(1 if n >= 2_000 else max(1, min(repeats, 3))):
        f = make(normal)  # a fresh jax.jit of a fresh function: nothing cached
        t0 = time.perf_counter()
        compiled = f.lower(tree, key).compile()
        compiles.append(time.perf_counter() - t0)
    record("5c", label, f"compile: {tool}", statistics.median(compiles))
    record("5r", label, f"run: {tool}", median_time(lambda: compiled(tree, key), repeats))


def case5(quick: bool, repeats: int, slow: bool) -> None:
    import treewalk as tw

    normal = tw.initializer(jax.nn.initializers.normal(1.0))
    for n in [10] if quick else [200, 2_000]:
        leaves = small_arrays(n, (8, 8))
        tree = {f"layer_{i}": {"kernel": leaves[i]} for i in range(n)}
        label = f"dict, {n:,} leaves (8, 8)"
        print(f"case 5: keyed normal re-init under jax.jit ({label})")
        _jit_case(label, tree, "treewalk replace(arrays, normal, key)", _jit_tw, normal, repeats)
        if n >= 2_000 and not slow:
            print(f"  5     {label:<28} per-leaf: skipped (pass --slow; ~5 min to compile)")
            continue
        _jit_case(label, tree, "per-leaf split + normal", _jit_per_leaf, normal, repeats)


# --------------------------------------------------------------------------- case 6


MEM_VARIANTS = [
    "treewalk: eqx.filter_eval_shape + replace",
    "treewalk: nnx.eval_shape + replace",
    "treewalk: eqx.filter_eval_shape + tw.materialize",
    "construct eqx model, then re-init (tree_map)",
    "construct eqx model, then tw.replace re-init",
    "construct eqx model only",
]


def _mem_model(quick: bool) -> tuple[int, int]:
    # Layers of (d, d) float32: quick 8 x 512 -> 8 MiB; full 32 x 2816 -> ~1 GB.
    return (8, 512) if quick else (32, 2816)


def mem_worker(variant: str, quick: bool) -> None:
    """Run one case-6 variant in this (fresh) process and print a JSON line."""
    import equinox as eqx

    import treewalk as tw

    n_layers, d = _mem_model(quick)

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def make(key: Any, n: int) -> Any:
        keys = jax.random.split(key, n)
        return [eqx.nn.Linear(d, d, use_bias=False, key=k) for k in keys]

    init = tw.initializer(jax.nn.initializers.normal(0.02))
    key = jax.random.key(0)
    model_bytes = n_layers * d * d * 4

    def go(n: int) -> Any:
        if variant == "treewalk: eqx.filter_eval_shape + replace":
            abstract = eqx.filter_eval_shape(make, key, n)
            return block(tw.replace(abstract, tw.arrays, init, key=key))
        if variant == "treewalk: nnx.eval_shape + replace":
            from flax import nnx

            class Stack(nnx.Module):
                def __init__(self, rngs: nnx.Rngs) -> None:
                    self.layers = nnx.List(
                        [nnx.Linear(d, d, use_bias=False, rngs=rngs) for _ in range(n)]
                    )

            abstract = nnx.eval_shape(lambda: Stack(nnx.Rngs(0)))
            out = tw.replace(abstract, tw.arrays, init, key=key)
            block(nnx.state(out))
            return out
        if variant == "treewalk: eqx.filter_eval_shape + tw.materialize":
            abstract = eqx.filter_eval_shape(make, key, n)
            return block(tw.materialize(abstract, init, key=key))
        if variant == "construct eqx model, then re-init (tree_map)":
            model = make(key, n)
            leaves, treedef = jax.tree_util.tree_flatten(model)
            del model
            ks = list(jax.random.split(jax.random.key(1), len(leaves)))
            new = [init.draw(k, x.shape, x.dtype) for k, x in zip(ks, leaves, strict=True)]
            del leaves
            return block(jax.tree_util.tree_unflatten(treedef, new))
        if variant == "construct eqx model, then tw.replace re-init":
            model = make(key, n)
            out = tw.replace(model, tw.arrays, init, key=key)
            del model
            return block(out)
        if variant == "construct eqx model only":
            return block(make(key, n))
        raise SystemExit(f"unknown variant {variant!r}")

    # Warm-up: the same variant on 2 layers of the same width (compiles every per-leaf
    # program at the real shapes), freed before the baseline is read.
    warm = go(2)
    del warm
    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    out = go(n_layers)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del out
    print(
        json.dumps(
            {
                "variant": variant,
                "before": before,
                "peak": peak,
                "model_bytes": model_bytes,
                "wall": wall,
            }
        )
    )


def case6(quick: bool) -> None:
    n_layers, d = _mem_model(quick)
    model_bytes = n_layers * d * d * 4
    label = f"eqx, {n_layers} x ({d},{d}) = {model_bytes / 2**20:.0f} MiB"
    print(f"case 6: materialise an abstract model, peak RSS above baseline ({label})")
    # The quick mode (a smoke test) runs one treewalk variant and one alternative.
    variants = [MEM_VARIANTS[0], MEM_VARIANTS[3]] if quick else MEM_VARIANTS
    for variant in variants:
        cmd = [sys.executable, os.path.abspath(__file__), "--mem-worker", variant]
        if quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            print(proc.stderr[-2000:], file=sys.stderr)
            record("6m", label, variant, float("nan"), unit="x model", note="failed")
            continue
        r = json.loads(lines[-1])
        ratio = (r["peak"] - r["before"]) / r["model_bytes"]
        record("6m", label, variant, ratio, unit="x model", extra=r)
        record("6t", label, variant, r["wall"])


# --------------------------------------------------------------------------- case 10


def _load_model(quick: bool) -> tuple[int, int]:
    # Layers of Linear(d, d): quick 4 x 256 -> 1 MB; full 16 x 2048 -> 268 MB.
    return (4, 256) if quick else (16, 2048)


def _rchar() -> int:
    """The bytes this process has read through `read` calls, page cache included."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def load_worker(spec: str) -> None:
    """One process of case 10: load the file into the model sharded over the global
    (4,) mesh, then export it back; print a JSON line with what this process read, held
    and peaked at, and the wall times."""
    import logging

    import equinox as eqx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import treewalk as tw

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from load import status

    s = json.loads(spec)
    if s["processes"] > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{s['port']}",
            num_processes=s["processes"],
            process_id=s["process_id"],
            initialization_timeout=60,
        )
    counts: list[int] = []

    class BytesRead(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg.startswith("tw.load: read"):
                counts.append(record.args[0])  # type: ignore[index]

    logging.getLogger("treewalk").addHandler(BytesRead(logging.DEBUG))
    logging.getLogger("treewalk").setLevel(logging.DEBUG)
    n_layers, d = s["layers"], s["d"]
    mesh = jax.make_mesh((jax.device_count(),), ("x",))
    rows, replicated = NamedSharding(mesh, P("x", None)), NamedSharding(mesh, P())

    def abstract(n: int, width: int) -> Any:
        model = eqx.filter_eval_shape(
            lambda k: {"layers": [eqx.nn.Linear(width, width, key=k) for _ in range(n)]},
            jax.random.key(0),
        )
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=rows if x.ndim == 2 else replicated
            ),
            model,
        )

    # Warm up on a small file: imports, dispatch, every device's runtime, the gathers.
    warm = tw.load(abstract(2, 256), s["warm"], convention="torch")
    tw.export(warm, s["out"] + ".warm", convention="torch")
    del warm
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    base, rchar = status("VmRSS"), _rchar()
    t0 = time.perf_counter()
    model = block(tw.load(abstract(n_layers, d), s["path"], convention="torch"))
    load_s = time.perf_counter() - t0
    load_peak, read_by_io = status("VmHWM") - base, _rchar() - rchar
    held = sum(
        sum(sh.data.nbytes for sh in {str(sh.index): sh for sh in x.addressable_shards}.values())
        for x in jax.tree.leaves(model)
    )
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    t0 = time.perf_counter()
    tw.export(model, s["out"], convention="torch")
    export_s = time.perf_counter() - t0
    export_peak = status("VmHWM") - base
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "load_s": load_s,
                "read": counts[-1],
                "read_by_io": read_by_io,
                "held": held,
                "load_peak": load_peak,
                "export_s": export_s,
                "export_peak": export_peak,
                "largest": d * d * 4,
            }
        )
    )
    if s["processes"] > 1:
        jax.distributed.shutdown()


def case10(quick: bool) -> None:
    """`tw.load` of a safetensors file into a model sharded over 4 CPU devices, every
    weight split by rows and every bias replicated: one process with the 4 devices,
    against two processes (`jax.distributed` on localhost) with 2 each. Per process: the
    bytes read (what `tw.load` logs; `/proc/self/io`'s rchar agrees), and the peak resident
    memory above the process's before the load, both against the process's share (the
    bytes of the distinct shards its devices hold); the wall time of the slowest
    process. Then `tw.export` of the loaded model back to a file, each the same way."""
    import socket
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from load import make_file

    n_layers, d = _load_model(quick)
    with tempfile.TemporaryDirectory() as tmp:
        path, warm = os.path.join(tmp, "model.safetensors"), os.path.join(tmp, "warm.safetensors")
        nbytes = make_file(path, n_layers, d)
        make_file(warm, 2, 256)
        for f in (path, warm):  # into the page cache, for every variant alike
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        label = f"{n_layers} x eqx Linear({d}, {d}) = {nbytes / 1e6:.0f} MB, (4,) mesh"
        print(f"case 10: tw.load into a model sharded over 4 CPU devices ({label})")
        for processes in (1, 2):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            env = dict(os.environ)
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={4 // processes}"
            procs = []
            for i in range(processes):
                spec = {
                    "path": path,
                    "warm": warm,
                    "out": os.path.join(tmp, f"out{processes}.safetensors"),
                    "layers": n_layers,
                    "d": d,
                    "processes": processes,
                    "process_id": i,
                    "port": port,
                }
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--load-worker",
                    json.dumps(spec),
                ]
                procs.append(
                    subprocess.Popen(
                        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                    )
                )
            results = []
            for p in procs:
                out, err = p.communicate(timeout=600)
                lines = [ln for ln in out.splitlines() if ln.startswith("{")]
                if p.returncode or not lines:
                    print(err[-2000:], file=sys.stderr)
                    raise SystemExit(f"case 10: a worker of {processes} process(es) failed")
                results.append(json.loads(lines[-1]))
            how = f"{processes} process{'es' if processes > 1 else ''} x {4 // processes} devices"
            record("10t", label, f"treewalk: tw.load, {how}", max(r["load_s"] for r in results))
            for r in results:
                who = f"{how}, process {r['process']}"
                extra = {k: r[k] for k in ("read", "read_by_io", "held", "load_peak")}
                share = r["held"] / nbytes
                record("10r", label, f"read / share, {who}", r["read"] / r["held"], unit="x")
                record("10m", label, f"peak / share, {who}", r["load_peak"] / r["held"], unit="x")
                print(f"        share {share:.2f} of the file; {extra}", flush=True)
            record(
                "10e", label, f"treewalk: tw.export, {how}", max(r["export_s"] for r in results)
            )
            for r in results:
                who = f"{how}, process {r['process']}"
                peak = r["export_peak"] / r["largest"]
                record("10x", label, f"export peak / largest array, {who}", peak, unit="x")
        with open(os.path.join(tmp, "out1.safetensors"), "rb") as a:
            with open(os.path.join(tmp, "out2.safetensors"), "rb") as b:
                assert a.read() == b.read(), "one and two processes exported different files"


# --------------------------------------------------------------------------- report


def case7(quick: bool, repeats: int) -> None:
    """One engine under every call: queries, walks, a small model, depth, misses."""
    import equinox as eqx

    import treewalk as tw

    n = 2_000 if quick else 100_000
    tree = nested_dict(n)
    label = f"nested dict, {len(jax.tree_util.tree_leaves(tree)):,} leaves"
    print(f"case 7: the engine's front-ends against hand-written JAX ({label})")
    flat = jax.tree_util.tree_flatten_with_path

    def hand_paths() -> Any:
        return [p for p, _ in flat(tree)[0] if is_bias(p)]

    run_tools(
        "7",
        f"{label}, paths",
        {
            "treewalk paths('**/bias')": lambda: tw.paths(tree, "**/bias"),
            "tree_flatten_with_path + path test": hand_paths,
        },
        repeats,
        sync=False,
    )
    run_tools(
        "7",
        f"{label}, mask",
        {
            "treewalk mask(~name('bias'))": lambda: tw.mask(tree, ~tw.name("bias")),
            "tree_map_with_path path test": lambda: jax.tree_util.tree_map_with_path(
                lambda p, x: not is_bias(p), tree
            ),
        },
        repeats,
        sync=False,
    )
    run_tools(
        "7",
        f"{label}, identity walk",
        {
            "treewalk prewalk identity": lambda: tw.prewalk(lambda p, x: x, tree),
            "treewalk postwalk identity": lambda: tw.postwalk(lambda p, x: x, tree),
            "tree_map_with_path identity": lambda: jax.tree_util.tree_map_with_path(
                lambda p, x: x, tree
            ),
        },
        repeats,
    )

    def miss() -> Any:
        try:
            tw.replace(tree, "**/biass", tw.zeros)
        except tw.NoMatchError as e:
            return str(e)

    run_tools(
        "7",
        f"{label}, a miss",
        {
            "treewalk replace('**/biass'): NoMatchError": miss,
            "treewalk replace('**/biass', strict=False)": lambda: tw.replace(
                tree, "**/biass", tw.zeros, strict=False
            ),
        },
        repeats,
        sync=False,
    )

    deep: Any = jnp.ones(2)
    for _ in range(900):
        deep = {"a": deep}
    run_tools(
        "7",
        "900-deep dict",
        {
            "treewalk replace(arrays, zeros)": lambda: tw.replace(deep, tw.arrays, tw.zeros),
            "treewalk postwalk identity": lambda: tw.postwalk(lambda p, x: x, deep),
            "tree_map_with_path identity": lambda: jax.tree_util.tree_map_with_path(
                lambda p, x: x, deep
            ),
        },
        repeats,
    )

    def hand_deep() -> Any:
        # Every node's path (internal ones too) whose last key is "a", from JAX.
        out = []

        def record(p: Any, x: Any) -> bool:
            if p and getattr(p[-1], "key", None) == "a":
                out.append(p)
            return False

        flat(deep, is_leaf=record, is_leaf_takes_path=True)
        return out

    # A query: nothing to wait for (waiting would walk the 900 paths it returns).
    run_tools(
        "7",
        "900-deep dict, paths",
        {
            "treewalk paths('**/a')": lambda: tw.paths(deep, "**/a"),
            "tree_flatten_with_path(is_leaf=record)": hand_deep,
        },
        repeats,
        sync=False,
    )

    mlp = eqx.nn.MLP(64, 10, 256, 4, key=jax.random.key(0))
    he = jax.nn.initializers.he_normal()
    key = jax.random.key(1)

    def hand_keyed() -> Any:
        ws = [layer.weight for layer in mlp.layers]
        keys = jax.random.split(key, len(ws))
        new = [he(k, w.shape, w.dtype) for k, w in zip(keys, ws, strict=True)]
        return eqx.tree_at(lambda m: [layer.weight for layer in m.layers], mlp, new)

    init = tw.initializer(he)
    small = "eqx.nn.MLP(64, 10, 256, 4)"
    # The first call compiles: each timed in a fresh process, after building the model.
    setup = (
        "import time, jax, equinox as eqx, treewalk as tw\n"
        "mlp = eqx.nn.MLP(64, 10, 256, 4, key=jax.random.key(0))\n"
        "he = jax.nn.initializers.he_normal(); key = jax.random.key(1)\n"
        "jax.block_until_ready(mlp.layers[0].weight + 1)\n"
        "t0 = time.perf_counter()\n"
    )
    first = {
        "cold: treewalk keyed replace": "out = tw.replace(mlp, '**/weight', tw.initializer(he), "
        "key=key)",
        "cold: split + he_normal + eqx.tree_at": "ws = [l.weight for l in mlp.layers]\n"
        "ks = jax.random.split(key, len(ws))\n"
        "out = eqx.tree_at(lambda m: [l.weight for l in m.layers], mlp, "
        "[he(k, w.shape, w.dtype) for k, w in zip(ks, ws)])",
    }
    for tool, code in first.items():
        script = setup + code + "\njax.block_until_ready(out)\nprint(time.perf_counter() - t0)"
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        record("7", f"{small}, first call", tool, float(done.stdout.split()[-1]))
    run_tools(
        "7",
        small,
        {
            "treewalk keyed replace(he_normal)": lambda: tw.replace(
                mlp, "**/weight", init, key=key
            ),
            "split + he_normal + eqx.tree_at": hand_keyed,
            "treewalk replace('**/bias', tw.zeros)": lambda: tw.replace(mlp, "**/bias", tw.zeros),
            "eqx.tree_at(replace_fn=zeros_like)": lambda: eqx.tree_at(
                lambda m: [layer.bias for layer in m.layers], mlp, replace_fn=jnp.zeros_like
            ),
        },
        max(repeats, 30),
    )


def first_call_worker(spec: str) -> None:
    """Case 8's cold call, in this fresh process: build the model, then time the first
    call of one tool on it (JSON line: seconds)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import models

    model_name, op, tool = json.loads(spec)
    model = models.MODELS[model_name]()
    call = models.calls(model_name)[op][tool]
    block(jax.tree_util.tree_leaves(model))  # the model is made before the clock starts
    t0 = time.perf_counter()
    block(call(model))
    print(json.dumps(time.perf_counter() - t0))


def case8(quick: bool, repeats: int) -> None:
    """Realistic models (5-400 leaves) against the code a user writes by hand: warm, in one
    process with the tools interleaved, and the first call, each in a fresh process."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import models

    print("case 8: realistic models, treewalk against hand-written code")
    names = list(models.MODELS)[:1] if quick else list(models.MODELS)
    for name in names:
        model = models.MODELS[name]()
        leaves = len(jax.tree_util.tree_leaves(model))
        label = f"{name} ({leaves} leaves)"
        for op, tools in models.calls(name).items():
            # Interleaved: each round times every tool once, so a drift of the machine's
            # speed touches them alike; the median of the rounds is reported.
            times: dict[str, list[float]] = {tool: [] for tool in tools}
            for fn in tools.values():
                block(fn(model))  # warm up: compile and learn the types
            gc.collect()
            for _ in range(max(repeats, 15)):
                for tool, fn in tools.items():
                    t0 = time.perf_counter()
                    block(fn(model))
                    times[tool].append(time.perf_counter() - t0)
            for tool, ts in times.items():
                record("8", f"{label}, {op}", tool, statistics.median(ts))
            if quick:
                continue
            for tool in tools:
                spec = json.dumps([name, op, tool])
                done = subprocess.run(
                    [sys.executable, __file__, "--first-call-worker", spec],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                cold = float(done.stdout.split()[-1])
                record("8", f"{label}, {op}, first call", f"cold: {tool}", cold)


def case9(quick: bool, repeats: int) -> None:
    """Two trees: an EMA of the selected leaves (`0.99 * ema + 0.01 * params`) with
    `tw.replace(ema, sel, fn, params)` against `jax.tree_util.tree_map_with_path(f, ema,
    params)` with the same path filter written by hand, interleaved rounds."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import equinox as eqx
    import models
    from flax import nnx

    import treewalk as tw

    def ema(p: Any, a: Any, k: Any, b: Any) -> Any:
        return 0.99 * a + 0.01 * b

    def has(name: str) -> Callable[[Any], bool]:
        return lambda path: any(getattr(e, "key", getattr(e, "name", None)) == name for e in path)

    def by_hand(pick: Callable[[Any], bool]) -> Callable[[Any, Any], Any]:
        def run(a: Any, b: Any) -> Any:
            return jax.tree_util.tree_map_with_path(
                lambda p, x, y: 0.99 * x + 0.01 * y if pick(p) else x, a, b
            )

        return run

    print("case 9: two trees, an EMA of a selection")
    cases: list[tuple[str, Any, Any, Any, Any]] = []
    for n in (400,) if quick else (4_000, 100_000):
        a = nested_dict(n)
        b = jax.tree.map(lambda x: x + 1, a)
        cases.append((f"nested dict, {n:,} leaves, dense/**", a, b, "**/dense/**", has("dense")))
    for name in list(models.MODELS)[:1] if quick else list(models.MODELS):
        a = models.MODELS[name]()
        if isinstance(a, nnx.Module):  # the hand-written EMA runs on the States
            a = nnx.state(a, nnx.Param)
        b = jax.tree.map(lambda x: x + 1, a)
        leaves = len(jax.tree_util.tree_leaves(a))
        cases.append((f"{name} ({leaves} leaves), every array", a, b, tw.arrays, eqx.is_array))
    for label, a, b, sel, pick in cases:
        hand = by_hand(pick if sel is not tw.arrays else lambda p: True)
        tools = {
            "treewalk: replace(ema, sel, fn, params)": lambda a=a, b=b, sel=sel: tw.replace(
                a, sel, ema, b
            ),
            "tree_map_with_path + path filter": lambda a=a, b=b, hand=hand: hand(a, b),
        }
        times: dict[str, list[float]] = {tool: [] for tool in tools}
        for fn in tools.values():
            block(fn())
        gc.collect()
        for _ in range(max(repeats, 7)):
            for tool, fn in tools.items():
                t0 = time.perf_counter()
                block(fn())
                times[tool].append(time.perf_counter() - t0)
        for tool, ts in times.items():
            record("9", label, tool, statistics.median(ts))


def table() -> str:
    """Markdown table: ratios against the treewalk row of the same case and tree."""
    lines = [
        "| case | tree | tool | median | ratio to treewalk |",
        "|---|---|---|---:|---:|",
    ]
    base: dict[tuple[str, str], float] = {}
    for r in ROWS:
        if "treewalk" in r.tool and (r.case, r.tree) not in base:
            base[(r.case, r.tree)] = r.value
    for r in ROWS:
        b = base.get((r.case, r.tree))
        ratio = f"{r.value / b:.2f}x" if b and b == b and r.value == r.value else "-"
        shown = f"{r.value * 1e3:.2f} ms" if r.unit == "s" else f"{r.value:.2f} {r.unit}"
        if r.unit == "s" and r.value >= 10:
            shown = f"{r.value:.1f} s"
        lines.append(f"| {r.case} | {r.tree} | {r.tool} | {shown} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small trees, seconds (CI smoke)")
    ap.add_argument("--slow", action="store_true", help="also per-leaf jit at 2,000 leaves")
    ap.add_argument("--only", default="1,2,3,4,5,6,7,8,9,10", help="comma-separated case numbers")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per tool")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--mem-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--first-call-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--load-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mem_worker:
        mem_worker(args.mem_worker, args.quick)
        return
    if args.first_call_worker:
        first_call_worker(args.first_call_worker)
        return
    if args.load_worker:
        load_worker(args.load_worker)
        return
    repeats = args.repeats or (3 if args.quick else 7)
    only = {c.strip() for c in args.only.split(",")}
    import equinox
    import flax
    import optax
    import penzai

    import treewalk

    print(
        f"treewalk bench ({'quick' if args.quick else 'full'}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}, {platform.python_version()}, "
        f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} devices), "
        f"treewalk {treewalk.__version__}, equinox {equinox.__version__}, "
        f"flax {flax.__version__}, optax {optax.__version__}, penzai {penzai.__version__}",
        flush=True,
    )
    t0 = time.perf_counter()
    if "1" in only:
        case1(args.quick, repeats)
    if "2" in only:
        case2(args.quick, repeats)
    if "3" in only:
        case3(args.quick, repeats)
    if "4" in only:
        case4(args.quick, repeats)
    if "5" in only:
        case5(args.quick, repeats, args.slow)
    if "6" in only:
        case6(args.quick)
    if "7" in only:
        case7(args.quick, repeats)
    if "8" in only:
        case8(args.quick, repeats)
    if "9" in only:
        case9(args.quick, repeats)
    if "10" in only:
        case10(args.quick)
    print()
    print(table())
    print(f"\ntotal {time.perf_counter() - t0:.1f} s, load {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in ROWS], f, indent=1)


if __name__ == "__main__":
    main()

"""`tw.load` of a ~1 GB safetensors file against the loop a user would write by hand.

    python bench/load.py              # 64 layers of Linear(2048, 2048): 1.07 GB
    python bench/load.py --mb 100     # a smaller file, for a quick look
    python bench/load.py --many 500   # also: 500 Linear(8, 8) from a flat dict
    python bench/load.py --sharded    # also: into 8 host devices, read shard by shard

The file is a PyTorch-style state_dict (`layers.<i>.weight` `(out, in)`, `layers.<i>.bias`)
of a list of `eqx.nn.Linear`. Four variants, each in its own subprocess:

- `tw abstract`: `tw.load(eqx.filter_eval_shape(Model, ...), path, convention="torch")`.
- `tw concrete`: the same into a model that already has its (random) weights.
- `loop abstract` / `loop concrete`: `safe_open` + one `eqx.tree_at` per tensor, the loop
  a user writes (`jnp.asarray(f.get_tensor(key))`, replacing the layer's weight).

Peak memory is `VmHWM` (peak resident set) after the load minus the resident set just
before it (the peak is reset there by writing 5 to `/proc/self/clear_refs`), divided by
the model's bytes (the largest of the repeats); the target is <= 1.05. Wall time is the
median over `--repeats` subprocesses of one load each (the file is in the page cache);
the ratio is loop / treewalk per round (the variants run round robin), so above 1 means
treewalk is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

WIDTH = 2048


def status(field: str) -> int:
    """A `/proc/self/status` field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def make_file(path: str, layers: int, width: int = WIDTH) -> int:
    """A PyTorch-style safetensors file of `layers` Linear(width, width) under `layers.`;
    its data bytes."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    sd = {}
    for i in range(layers):
        sd[f"layers.{i}.weight"] = rng.standard_normal((width, width), np.float32)
        sd[f"layers.{i}.bias"] = rng.standard_normal(width, np.float32)
    save_file(sd, path)
    return sum(v.nbytes for v in sd.values())


def worker(variant: str, path: str, layers: int) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from safetensors import safe_open

    import treewalk as tw

    class Model(eqx.Module):
        layers: list

        def __init__(self, key):
            keys = jax.random.split(key, layers)
            self.layers = [eqx.nn.Linear(WIDTH, WIDTH, key=k) for k in keys]

    abstract = variant.endswith(("abstract", "sharded"))
    if variant == "tw sharded":  # every array split along its first axis over 8 devices
        mesh = jax.make_mesh((8,), ("x",))
        spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
        model = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=spec),
            eqx.filter_eval_shape(Model, jax.random.key(0)),
        )
    elif abstract:
        model = eqx.filter_eval_shape(Model, jax.random.key(0))
    else:
        model = jax.block_until_ready(Model(jax.random.key(0)))
    # Warm up what both variants share (one small load: dispatch paths, imports).
    small = {"weight": np.ones((2, 3), np.float32), "bias": np.ones(2, np.float32)}
    tw.load(eqx.nn.Linear(3, 2, key=jax.random.key(0)), small, convention="torch")
    jnp.asarray(np.ones(3)).block_until_ready()
    if variant == "tw sharded":  # start every device's runtime before the base is read
        jax.device_put(np.ones((8, 1024), np.float32), spec).block_until_ready()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    base = status("VmRSS")
    t0 = time.perf_counter()
    if variant.startswith("tw"):
        out = tw.load(model, path, convention="torch")
    else:
        out = model
        with safe_open(path, framework="numpy") as f:
            for i in range(layers):
                for name in ("weight", "bias"):
                    value = jnp.asarray(f.get_tensor(f"layers.{i}.{name}"))
                    out = eqx.tree_at(
                        lambda m, i=i, name=name: getattr(m.layers[i], name), out, value
                    )
    jax.block_until_ready(out)
    wall = time.perf_counter() - t0
    peak = status("VmHWM")
    end = status("VmRSS")
    check = float(np.asarray(out.layers[layers - 1].bias)[0])
    return {
        "variant": variant,
        "wall_s": wall,
        "peak_above_base": peak - base,
        "end_above_base": end - base,
        "check": check,
    }


def many_small(layers: int) -> None:
    """A flat `{key: numpy}` state_dict of many small layers: `tw.load` against one
    `eqx.tree_at` per layer (each rebuilds the whole model: quadratic)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import treewalk as tw

    model = [eqx.nn.Linear(8, 8, key=k) for k in jax.random.split(jax.random.key(0), layers)]
    rng = np.random.default_rng(0)
    sd = {}
    for i in range(layers):
        sd[f"{i}.weight"] = rng.standard_normal((8, 8), np.float32)
        sd[f"{i}.bias"] = rng.standard_normal(8, np.float32)
    tw.load(model, sd, convention="torch")  # warm-up
    t0 = time.perf_counter()
    ours = jax.block_until_ready(tw.load(model, sd, convention="torch"))
    t_tw = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = model
    for i in range(layers):
        new = (jnp.asarray(sd[f"{i}.weight"]), jnp.asarray(sd[f"{i}.bias"]))
        loop = eqx.tree_at(lambda m, i=i: (m[i].weight, m[i].bias), loop, new)
    loop = jax.block_until_ready(loop)
    t_loop = time.perf_counter() - t0
    pairs = zip(jax.tree.leaves(ours), jax.tree.leaves(loop), strict=True)
    assert all((a == b).all() for a, b in pairs)
    print(
        f"{layers} x Linear(8, 8) from a dict: tw.load {t_tw:.2f} s, tree_at loop "
        f"{t_loop:.2f} s (loop / tw = {t_loop / t_tw:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=1070.0, help="file size, MB")
    parser.add_argument("--repeats", type=int, default=3, help="subprocesses per variant")
    parser.add_argument("--many", type=int, default=0, help="also N small layers from a dict")
    parser.add_argument(
        "--sharded", action="store_true", help="also into 8 host devices, each array split"
    )
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "PATH", "LAYERS"))
    args = parser.parse_args()
    if args.worker:
        variant, path, layers = args.worker
        print(json.dumps(worker(variant, path, int(layers))))
        return
    layer_bytes = (WIDTH * WIDTH + WIDTH) * 4
    layers = max(1, round(args.mb * 1e6 / layer_bytes))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        nbytes = make_file(path, layers)
        with open(path, "rb") as f:  # into the page cache, for every variant alike
            while f.read(1 << 24):
                pass
        print(f"{layers} x Linear({WIDTH}, {WIDTH}): {nbytes / 1e9:.2f} GB, {2 * layers} tensors")
        results = {}
        variants = ["tw abstract", "loop abstract", "tw concrete", "loop concrete"]
        if args.sharded:
            variants.append("tw sharded")
        # Round robin: each round runs every variant once, so the machine's drift touches
        # them alike; the ratios are per round, then their median.
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                env = dict(os.environ)
                if variant == "tw sharded":
                    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
                cmd = [sys.executable, __file__, "--worker", variant, path, str(layers)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for variant, rs in runs.items():
            r = {
                "wall_s": statistics.median(x["wall_s"] for x in rs),
                "peak": max(x["peak_above_base"] for x in rs) / nbytes,
                "end": max(x["end_above_base"] for x in rs) / nbytes,
                "check": {x["check"] for x in rs},
            }
            results[variant] = r
            print(
                f"{variant:14s} {r['wall_s']:7.2f} s (median of {args.repeats})   peak RSS "
                f"above base {r['peak']:.2f}x model (at the end {r['end']:.2f}x)"
            )
        checks = set().union(*(r["check"] for r in results.values()))
        assert len(checks) == 1, f"the variants loaded different values: {checks}"
        for kind in ("abstract", "concrete"):
            pairs = zip(runs[f"loop {kind}"], runs[f"tw {kind}"], strict=True)
            ratios = sorted(loop["wall_s"] / tw["wall_s"] for loop, tw in pairs)
            print(
                f"{kind}: loop / tw wall time, per round: median {statistics.median(ratios):.2f} "
                f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})"
            )
    if args.many:
        many_small(args.many)


if __name__ == "__main__":
    main()

"""`tw.load` and `tw.export` across two JAX processes on localhost (2 CPU devices each, one
(4,) mesh), each worker a subprocess with a hard timeout: every process reads only the
parts of the file its devices hold (the bytes `tw.load` logs it read equal those of its
distinct shards), holds the values of a one-process load, and `tw.export` writes the file
from process 0, gathering one array at a time.

The recipe is examples/multiprocess_load.py; this file's own workers (`python
tests/test_multiprocess_load.py --worker I --port P --dir D`) load through conversions
(transposed, packed attention rows, reshaped biases, flipped kernels), onto a (2, 2) mesh
whose shards two devices of a process share, with a tie, and export to a file and to a
dict (refused)."""

import argparse
import os
import sys
from pathlib import Path

import pytest
from processes import run_workers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "multiprocess_load.py"

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="gloo CPU collectives: Linux/macOS"
)


def test_the_recipe_reads_in_each_process_only_its_shards(tmp_path):
    for i, out in enumerate(run_workers(EXAMPLE, "--dir", str(tmp_path))):
        # Half of the rows of every weight, every bias: (16384 / 2 + 288) * 4 bytes.
        assert f"process {i}: read 33920 bytes of the 67456-byte file" in out, out[-3000:]
        assert "equal to a one-process load: OK" in out
        assert f"process {i}: exported back, the same file: OK" in out


CASES = ["transposed", "layers", "shared shards", "tie", "export"]


def test_conversions_shared_shards_ties_and_export(tmp_path):
    for i, out in enumerate(run_workers(Path(__file__), "--dir", str(tmp_path))):
        for case in CASES:
            assert f"process {i}: {case}: OK" in out, out[-3000:]


def worker(process_id: int, port: int, folder: str) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import logging

    import equinox as eqx
    import jax
    import numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P
    from safetensors.numpy import load_file, save_file

    import treewalk as tw

    assert Path(tw.__file__).parents[1] == ROOT, tw.__file__  # this checkout's treewalk
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )
    counts: list[int] = []

    class BytesRead(logging.Handler):
        def emit(self, record):
            if record.msg.startswith("tw.load: read"):
                counts.append(record.args[0])

    logging.getLogger("treewalk").addHandler(BytesRead(logging.DEBUG))
    logging.getLogger("treewalk").setLevel(logging.DEBUG)
    mesh = jax.make_mesh((4,), ("x",))
    rng = np.random.default_rng(0)

    def arrays(tree):
        return jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))

    def placed(abstract, spec_of, mesh=mesh):
        def one(x):
            if not isinstance(x, jax.ShapeDtypeStruct):
                return x  # an activation function, a dropout rate
            sharding = NamedSharding(mesh, spec_of(x))
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

        return jax.tree_util.tree_map(one, abstract)

    def check(case, abstract, path, spec_of, mesh=mesh):
        """Load `path` into `abstract` sharded by `spec_of`: the same values as a
        one-process load, each process reading exactly its distinct shards."""
        want = tw.load(abstract, path, convention="torch")
        got = tw.load(placed(abstract, spec_of, mesh), path, convention="torch")
        read, held = counts[-1], 0
        for g, w in zip(arrays(got), arrays(want), strict=True):
            assert not g.is_fully_addressable or g.sharding.is_fully_replicated
            for shard in {str(s.index): s for s in g.addressable_shards}.values():
                np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(w)[shard.index])
                held += shard.data.nbytes
        assert read == held, (case, read, held)
        print(f"process {process_id}: {case}: OK ({read} bytes read)", flush=True)
        return got

    try:
        # An NNX Linear from a PyTorch file: every kernel transposed, so a shard of its
        # rows is a shard of the file's columns. (Each process writes the same file.)
        linear_file = path = os.path.join(folder, f"linear{process_id}.safetensors")
        save_file(
            {
                "weight": rng.standard_normal((8, 16)).astype(np.float32),
                "bias": rng.standard_normal(8).astype(np.float32),
            },
            path,
        )
        linear = nnx.eval_shape(lambda: nnx.Linear(16, 8, rngs=nnx.Rngs(0)))
        check("transposed", linear, path, lambda x: P("x"))

        # Rows of PyTorch's packed attention projection, a conv bias (8,) -> (8, 1, 1), a
        # transposed conv's kernel flipped and transposed, each sharded over an axis.
        path = os.path.join(folder, f"layers{process_id}.safetensors")
        save_file(
            {
                "conv.weight": rng.standard_normal((8, 4, 2, 2)).astype(np.float32),
                "conv.bias": rng.standard_normal(8).astype(np.float32),
                "up.weight": rng.standard_normal((8, 4, 4, 4)).astype(np.float32),
                "up.bias": rng.standard_normal(4).astype(np.float32),
                "attn.in_proj_weight": rng.standard_normal((24, 8)).astype(np.float32),
                "attn.in_proj_bias": rng.standard_normal(24).astype(np.float32),
                "attn.out_proj.weight": rng.standard_normal((8, 8)).astype(np.float32),
            },
            path,
        )

        def layers(key):
            k1, k2, k3 = jax.random.split(key, 3)
            return {
                "conv": eqx.nn.Conv2d(4, 8, 2, key=k1),
                "up": eqx.nn.ConvTranspose2d(8, 4, 4, key=k2),
                "attn": eqx.nn.MultiheadAttention(
                    2, 8, use_query_bias=True, use_key_bias=True, use_value_bias=True, key=k3
                ),
            }

        def last_axis_4_divides(x):
            axes = [None] * x.ndim
            axes[max(a for a in range(x.ndim) if x.shape[a] % 4 == 0)] = "x"
            return P(*axes)

        abstract = eqx.filter_eval_shape(layers, jax.random.key(0))
        check("layers", abstract, path, last_axis_4_divides)

        # A (2, 2) mesh: a process's two devices are one row, and P("data") gives both
        # the same half of each weight: read once.
        mlp = eqx.filter_eval_shape(eqx.nn.MLP, 8, 8, 16, 2, key=jax.random.key(0))
        path = os.path.join(folder, "mlp.safetensors")
        normal = tw.initializer(jax.nn.initializers.normal())
        made = tw.replace(mlp, tw.arrays, normal, key=jax.random.key(1))  # in each process
        tw.export(made, path)  # process 0 writes it
        square = jax.make_mesh((2, 2), ("data", "model"))
        check("shared shards", mlp, path, lambda x: P("data"), square)

        # A tie with a key of its own: checked shard by shard, in each process.
        path = os.path.join(folder, f"tie{process_id}.safetensors")
        value = rng.standard_normal((8, 4)).astype(np.float32)
        save_file({"embed": value, "head": value}, path)
        sharding = NamedSharding(mesh, P("x"))
        zeros = np.zeros((8, 4), np.float32)
        w = jax.make_array_from_callback((8, 4), sharding, lambda i: zeros[i])
        got = tw.load({"embed": w, "head": w}, path)
        assert got["embed"] is got["head"]
        for shard in got["head"].addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), value[shard.index])
        print(f"process {process_id}: tie: OK", flush=True)

        # Export: the file holds what a one-process export of the same values does; the
        # dict is refused, naming the array.
        loaded = tw.load(placed(linear, lambda x: P("x")), linear_file, convention="torch")
        one = tw.load(linear, linear_file, convention="torch")
        path = os.path.join(folder, "exported.safetensors")
        tw.export(loaded, path, convention="torch")
        written = load_file(path)
        for k, v in tw.export(one, convention="torch").items():
            np.testing.assert_array_equal(written[k], v)
        try:
            tw.export(loaded)
        except tw.ArgumentError as e:
            assert "the array at 'bias' is sharded over devices of other processes" in str(e)
        else:
            raise AssertionError("tw.export(model) of a model spread over processes")
        print(f"process {process_id}: export: OK", flush=True)
    finally:
        jax.distributed.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    worker(args.worker, args.port, args.dir)

"""Load a checkpoint into a model sharded across two processes, each reading
only the slices its own devices hold; then export it back to one file.

Two processes on localhost, with 2 CPU devices each, share a (4,) mesh, as
two hosts of a cluster would. Every process runs the same code:

1. `tw.export(model, path)` writes a PyTorch-style safetensors checkpoint of
   an Equinox MLP (process 0 writes it; every process has the same model).
2. `tw.load(abstract, path)` loads it into the MLP's abstract shape, each
   weight split by rows over the global mesh, each bias replicated. Each
   process reads from the file only the rows its 2 devices hold, and each
   bias once: `tw.load` says what it read at DEBUG level, on the `treewalk`
   logger, and the bytes read equal the bytes of those shards.
3. Each process checks its shards against the same load done in one process.
4. `tw.export(model, path)` of the sharded model writes the file again:
   process 0 writes, gathering one weight at a time. It is the same file.

Run it (it starts the two processes itself):

    python examples/multiprocess_load.py

or start the processes by hand, e.g. on two terminals:

    python examples/multiprocess_load.py --worker 0 --port 12356
    python examples/multiprocess_load.py --worker 1 --port 12356
"""

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile

NUM_PROCESSES = 2
LOCAL_DEVICES = 2


class BytesRead(logging.Handler):
    """Keeps the bytes each `tw.load` says it read."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("tw.load: read"):
            self.counts.append(record.args[0])


def worker(process_id: int, port: int, folder: str) -> None:
    # Before JAX is imported: this process's simulated CPU devices.
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"
    import equinox as eqx
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import treewalk as tw

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=process_id,
        initialization_timeout=60,
    )
    read = BytesRead()
    logging.getLogger("treewalk").addHandler(read)
    logging.getLogger("treewalk").setLevel(logging.DEBUG)
    try:
        mesh = jax.make_mesh((jax.device_count(),), ("x",))  # the global mesh

        def mlp(key):
            return eqx.nn.MLP(32, 32, 64, 4, key=key)

        # 1. A checkpoint: the same model in every process, written by one.
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "mlp.safetensors")
        reference = mlp(jax.random.key(0))
        tw.export(reference, path, convention="torch")

        # 2. The abstract model, in its shardings, loaded from the file.
        def placed(spec):
            sharding = NamedSharding(mesh, spec)
            return lambda path, x, key: jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=sharding
            )

        abstract = eqx.filter_eval_shape(mlp, jax.random.key(0))
        abstract = tw.replace(abstract, "**/weight", placed(P("x", None)))
        abstract = tw.replace(abstract, "**/bias", placed(P()))
        model = tw.load(abstract, path, convention="torch")
        bytes_read = read.counts[-1]

        # 3. Only this process's shards were read, and they hold the values
        # of a one-process load.
        one = tw.load(
            eqx.filter_eval_shape(mlp, jax.random.key(0)),
            path,
            convention="torch",
        )
        pairs = zip(
            jax.tree.leaves(eqx.filter(model, eqx.is_array)),
            jax.tree.leaves(eqx.filter(one, eqx.is_array)),
            strict=True,
        )
        held = 0
        for x, want in pairs:
            shards = {str(s.index): s for s in x.addressable_shards}.values()
            for shard in shards:
                np.testing.assert_array_equal(
                    np.asarray(shard.data), np.asarray(want)[shard.index]
                )
                held += shard.data.nbytes
        assert bytes_read == held, (bytes_read, held)
        size = os.path.getsize(path)
        print(
            f"process {process_id}: read {bytes_read} bytes of the "
            f"{size}-byte file, the shards its {LOCAL_DEVICES} devices hold, "
            f"equal to a one-process load: OK",
            flush=True,
        )

        # 4. Back to a file: process 0 writes, gathering one array at a time.
        again = os.path.join(folder, "mlp-again.safetensors")
        tw.export(model, again, convention="torch")
        with open(path, "rb") as a, open(again, "rb") as b:
            assert a.read() == b.read()
        print(f"process {process_id}: exported back, the same file: OK")
    finally:
        jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(timeout: float = 240) -> int:
    """Start the worker processes; return the first non-zero exit code, else
    0."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(i),
                    "--port",
                    str(port),
                    "--dir",
                    folder,
                ]
            )
            for i in range(NUM_PROCESSES)
        ]
        try:
            codes = [p.wait(timeout=timeout) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, help="run as this process id")
    parser.add_argument("--port", type=int, help="the coordinator's port")
    parser.add_argument(
        "--dir",
        default=os.path.join(tempfile.gettempdir(), "treewalk-multiprocess"),
        help="a folder every process sees (the checkpoint goes there)",
    )
    args = parser.parse_args()
    if args.worker is None:
        sys.exit(launch())
    worker(args.worker, args.port, args.dir)

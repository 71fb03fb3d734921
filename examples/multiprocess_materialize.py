"""Materialise a sharded model across two processes, each creating only its
own shards.

JAX's multi-process runtime is how a model outgrows one machine: every process
runs the same program on a global mesh and holds the shards of its own
devices. Here two processes on localhost, with 2 CPU devices each, share a
(4,) mesh. `tw.materialize` builds an Equinox MLP from its abstract shape
inside one jit; each process ends up holding 2 of the 4 shards of every
weight, and checks them against the same init done eagerly on one device: the
values do not depend on the mesh.

Run it (it starts the two processes itself):

    python examples/multiprocess_materialize.py

or start the processes by hand, e.g. on two terminals:

    python examples/multiprocess_materialize.py --worker 0 --port 12355
    python examples/multiprocess_materialize.py --worker 1 --port 12355
"""

import argparse
import os
import socket
import subprocess
import sys

NUM_PROCESSES = 2
LOCAL_DEVICES = 2


def worker(process_id: int, port: int) -> None:
    # Before JAX is imported: this process's simulated CPU devices.
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"
    import equinox as eqx
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec as P

    import treewalk as tw

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=process_id,
        initialization_timeout=60,
    )
    try:
        assert jax.device_count() == NUM_PROCESSES * LOCAL_DEVICES
        mesh = jax.make_mesh((jax.device_count(),), ("x",))  # the global mesh
        init = {
            "**/bias": tw.zeros,
            "**/weight": tw.initializer(jax.nn.initializers.lecun_normal()),
        }
        plan = {"**/weight": P("x", None), "**/bias": P("x")}
        abstract = eqx.filter_eval_shape(
            eqx.nn.MLP, 32, 32, 64, 4, key=jax.random.key(0)
        )
        model = tw.materialize(
            abstract, init, key=jax.random.key(1), plan=plan, mesh=mesh
        )

        # The reference: the same init, eagerly, on this process's first
        # device.
        ref = tw.replace(abstract, "**/bias", init["**/bias"])
        ref = tw.replace(
            ref, "**/weight", init["**/weight"], key=jax.random.key(1)
        )

        leaves = [x for x in jax.tree.leaves(model) if eqx.is_array(x)]
        refs = [x for x in jax.tree.leaves(ref) if eqx.is_array(x)]
        assert len(leaves) == len(refs) == 10
        held = 0
        for x, r in zip(leaves, refs, strict=True):
            # This process does not hold it all.
            assert not x.is_fully_addressable
            assert len(x.addressable_shards) == LOCAL_DEVICES
            for shard in x.addressable_shards:
                assert shard.data.shape[0] == x.shape[0] // jax.device_count()
                np.testing.assert_array_equal(
                    np.asarray(shard.data), np.asarray(r)[shard.index]
                )
                held += shard.data.size
        total = sum(x.size for x in leaves)
        print(
            f"process {process_id}: holds {held} of {total} parameters\n"
            f"  ({len(leaves)} leaves, "
            f"{LOCAL_DEVICES} of {jax.device_count()} shards each), "
            f"equal to the single-device init: OK",
            flush=True,
        )
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
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(i),
                "--port",
                str(port),
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
    args = parser.parse_args()
    if args.worker is None:
        sys.exit(launch())
    worker(args.worker, args.port)

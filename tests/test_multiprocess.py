"""Two JAX processes on localhost (2 CPU devices each, one (4,) mesh) materialise a sharded
model with `tw.materialize`; each must hold only its own shards, equal to a one-device init.
The workers are examples/multiprocess_materialize.py, started here with a hard timeout."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "multiprocess_materialize.py"
TIMEOUT_S = 180


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(sys.platform == "win32", reason="gloo CPU collectives: Linux/macOS")
def test_two_processes_each_create_only_their_shards():
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # workers set their own
    procs = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--worker", str(i), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT_S)
            outputs.append(out)
    finally:
        for p in procs:  # never leave a worker behind, even on timeout or failure
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"worker {i} failed:\n{out[-3000:]}"
        assert f"process {i}: holds 8336 of 16672 parameters" in out, out[-3000:]
        assert "2 of 4 shards each" in out and "OK" in out

"""Two JAX processes on localhost (2 CPU devices each, one (4,) mesh) materialise a sharded
model with `tw.materialize`; each must hold only its own shards, equal to a one-device init.
The workers are examples/multiprocess_materialize.py, started here with a hard timeout."""

import sys
from pathlib import Path

import pytest
from processes import run_workers

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "multiprocess_materialize.py"


@pytest.mark.skipif(sys.platform == "win32", reason="gloo CPU collectives: Linux/macOS")
def test_two_processes_each_create_only_their_shards():
    for i, out in enumerate(run_workers(EXAMPLE)):
        assert f"process {i}: holds 8336 of 16672 parameters" in out, out[-3000:]
        assert "2 of 4 shards each" in out and "OK" in out

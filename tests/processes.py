"""Starting the worker processes of a multi-process test: JAX processes on localhost
that find each other through a coordinator port, each run as `python SCRIPT --worker I
--port PORT ARGS...`, with a hard timeout and never left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(script: Path, *args: str, n: int = 2, timeout: float = 180) -> list[str]:
    """Run `n` workers of `script` to the end; the output (stdout and stderr) of each.
    A worker that fails fails the test, with its output's end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # workers set their own
    cmd = [sys.executable, str(script), "--port", str(port), *args]
    procs = [
        subprocess.Popen(
            [*cmd, "--worker", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(n)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for p in procs:  # never leave a worker behind, even on timeout or failure
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"worker {i} failed:\n{out[-3000:]}"
    return outputs

"""A second Python process for `check_key_deterministic(across_processes=True)`: started
once per check with another `PYTHONHASHSEED` and the parent's JAX settings, sent the
transform once and then each tree and seed by `pickle`, it answers with the output's
leaves as numpy arrays, which the parent compares with its own output."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import types
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core.errors import ArgumentError
from .._core.paths import path_str
from .._frameworks import registry, unboxed
from ._compare import is_array, is_key, leaf_list, mismatch

#: JAX settings that change what a key draws or how a transform computes; the second
#: process gets the parent's.
_CONFIG = (
    "jax_enable_x64",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_default_matmul_precision",
)

#: Where functions that `pickle` cannot find under their own name are looked up by
#: name (`jax.nn.relu` is a `custom_jvp`, `jnp.tanh` a jitted function).
_NAMESPACES = {"jax.nn": jax.nn, "jax.numpy": jnp}

_SERVE = "from treewalk.testing._processes import serve; serve()"


class _Pickler(pickle.Pickler):
    """Pickles functions that live under another name than their own (`jax.nn.relu`,
    Equinox's `MLP` default `final_activation`) by the name they are found under."""

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, type) or not callable(obj) or not hasattr(obj, "__name__"):
            return None  # not a function
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        if isinstance(obj, types.FunctionType) and module is not None:
            if getattr(module, obj.__qualname__, None) is obj:
                return None  # pickle finds it by its own name
        if module is not None:
            for attr, value in vars(module).items():
                if value is obj:
                    return (module.__name__, attr)
        for ns_name, ns in _NAMESPACES.items():
            if getattr(ns, obj.__name__, None) is obj:
                return (ns_name, obj.__name__)
        return None


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        module, attr = pid
        __import__(module)
        return getattr(sys.modules[module], attr)


def _dumps(obj: Any) -> bytes:
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return out.getvalue()


def _send(stream: IO[bytes], payload: bytes) -> None:
    stream.write(struct.pack("<Q", len(payload)) + payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    return _Unpickler(io.BytesIO(stream.read(n))).load()


def portable(tree: Any) -> list[tuple[str, Any]]:
    """The leaves of `tree` as `(path, value)`: arrays as numpy arrays (a PRNG key as its
    key data), a box as its type's name and value, any other leaf as a type name and,
    for numbers and strings, its value; what two processes can compare."""
    out = []
    boxes = registry.refresh().boxes
    for path, x in leaf_list(tree):
        box = type(x).__name__ if boxes and isinstance(x, boxes) else None
        x = unboxed(x)
        if is_array(x):
            value: Any = np.asarray(jax.random.key_data(x) if is_key(x) else x)
        elif x is None or isinstance(x, int | float | str | bool):
            value = x
        else:
            value = type(x).__qualname__
        out.append((path_str(path), (box, value)))
    return out


def _hash_seed() -> str:
    """Another `PYTHONHASHSEED` than this process's."""
    mine = os.environ.get("PYTHONHASHSEED", "")
    return str((int(mine) + 1) % 2**32) if mine.isdigit() else "1"


class Worker:
    """The second process: `check(tree, seed, expected)` raises `AssertionError` when
    it computes another output than `expected` for `transform(tree, key(seed))`."""

    def __init__(self, transform: Any) -> None:
        name = getattr(transform, "__qualname__", repr(transform))
        if getattr(transform, "__module__", None) == "__main__":
            raise _unpicklable(name, "it is defined in __main__")
        try:
            payload = _dumps(transform)
        except Exception as err:
            raise _unpicklable(name, err) from err
        env = dict(os.environ)
        env["PYTHONHASHSEED"] = self.hash_seed = _hash_seed()
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        config = {k: getattr(jax.config, k) for k in _CONFIG if hasattr(jax.config, k)}
        self._send(_dumps(config))
        self._send(payload)
        status = self._answer()
        if status[0] != "ready":
            self.close()
            raise _unpicklable(name, status[1])

    def _send(self, payload: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            _send(self._proc.stdin, payload)
        except BrokenPipeError:
            self._died()

    def _answer(self) -> Any:
        assert self._proc.stdout is not None
        reply = _receive(self._proc.stdout)
        if reply is None:
            self._died()
        return reply

    def _died(self) -> None:
        self._proc.wait(timeout=60)
        self._log.seek(0)
        tail = self._log.read()[-3000:].decode(errors="replace")
        raise RuntimeError(
            f"check_key_deterministic(across_processes=True): the second Python process "
            f"exited ({self._proc.returncode}):\n{tail}"
        )

    def check(self, tree: Any, seed: int, expected: Any) -> None:
        try:
            payload = _dumps((tree, seed))
        except Exception as err:
            raise ArgumentError(
                f"check_key_deterministic(across_processes=True) sends each tree to "
                f"another process by pickle, and this one cannot be pickled ({err}); "
                f"draw trees of picklable leaves (arrays, numbers, module-level classes)."
            ) from err
        self._send(payload)
        status, theirs = self._answer()
        there = f"another process (PYTHONHASHSEED={self.hash_seed})"
        assert status == "ok", f"in {there}, the transform raised {theirs}"
        ours = portable(expected)
        for (p, (box, x)), (q, (box2, y)) in zip(ours, theirs, strict=False):
            assert p == q and box == box2, f"{there} gives another structure: at {p!r}, {q!r}"
            why = mismatch(x, y) if is_array(x) or is_array(y) else (None if x == y else "")
            assert why is None, f"{there} gives another tree with the same key, at {p!r}" + (
                f": {why}" if why else f": {x!r} there, {y!r} here"
            )
        assert len(ours) == len(theirs), f"{there} gives a tree of another structure"

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):  # pragma: no cover
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdout, self._log):
            if stream is not None:
                stream.close()


def _unpicklable(name: str, why: object) -> ArgumentError:
    return ArgumentError(
        f"check_key_deterministic(across_processes=True) runs the transform in another "
        f"Python process, which gets it by pickle, and {name!r} cannot go there ({why}). "
        f"Define it at module level of an importable module (a test module is one), or "
        f"pass a functools.partial of such a function."
    )


def serve() -> None:
    """The second process's loop: JAX settings, the transform, then `(tree, seed)`s."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # what the transform prints must not mix with the answers
    config = _receive(stdin)
    for name, value in (config or {}).items():
        jax.config.update(name, value)
    try:
        transform = _receive(stdin)
    except Exception as err:
        _send(stdout, _dumps(("error", f"{type(err).__name__}: {err}")))
        return
    _send(stdout, _dumps(("ready", None)))
    while (request := _receive(stdin)) is not None:
        tree, seed = request
        try:
            reply: Any = ("ok", portable(transform(tree, jax.random.key(seed))))
        except Exception as err:
            reply = ("error", f"{type(err).__name__}: {err}")
        _send(stdout, _dumps(reply))

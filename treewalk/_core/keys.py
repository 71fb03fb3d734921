"""PRNG keys for selected nodes: derived from their paths, or split in traversal order."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ArgumentError, PRNGKeyError
from .paths import path_segments
from .placement import unstack


def as_typed_key(key: Any) -> tuple[jax.Array, bool]:
    """`(typed key, was_legacy)`: accepts `jax.random.key(...)` and legacy `uint32[2]` keys."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise PRNGKeyError(
                f"key= must be a single PRNG key, got a key array of shape {key.shape}. "
                f"To build an ensemble, jax.vmap over the keys instead."
            )
        return key, False
    if dtype is not None and getattr(key, "shape", None) == (2,) and dtype == jnp.uint32:
        return jax.random.wrap_key_data(key), True
    raise PRNGKeyError(
        f"key= must be a JAX PRNG key (jax.random.key(0)) or a legacy uint32[2] key "
        f"(jax.random.PRNGKey(0)); got {type(key).__name__}"
        f"{'' if dtype is None else f' of dtype {dtype} and shape {key.shape}'}."
    )


@functools.lru_cache(maxsize=1 << 16)  # a model's paths recur call after call
def path_hash(segs: tuple[str | int, ...]) -> tuple[int, int]:
    """A stable 64-bit hash of a path's segments, as two `uint32`.

    Each segment is encoded with its kind (`str`/`int`) and length, so `("ab", "cdef")`,
    `("abc", "def")` and `("1",)`/`(1,)` all differ. The hash depends on nothing else: not
    on Python's `hash` seed, the process, or the rest of the tree.
    """
    h = hashlib.blake2b(digest_size=8, person=b"treewalk")
    for s in segs:
        if type(s) is int or isinstance(s, int):
            b = str(int(s)).encode()
            h.update(b"i%d:" % len(b))
        else:
            b = str(s).encode("utf-8", "surrogatepass")
            h.update(b"s%d:" % len(b))
        h.update(b)
    d = h.digest()
    return int.from_bytes(d[:4], "little"), int.from_bytes(d[4:], "little")


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


#: Up to this many keys come out of one call as separate arrays (`Keys.rows`): slicing a
#: key array costs a dispatch per key (~40 us measured), more than a small model's whole
#: walk. More keys are sliced, as outputs of their own would make the call slow to compile.
UNSTACKED_MAX = 64


class Keys:
    """The `n` keys of one call, as one key array `stack[i]` (padded past `n`)."""

    __slots__ = ("stack", "n")

    def __init__(self, stack: jax.Array, n: int) -> None:
        self.stack, self.n = stack, n

    def rows(self, js: Sequence[int], legacy: bool) -> Sequence[jax.Array]:
        """Keys `js` as separate arrays (legacy `uint32[2]` data if `legacy`), cut in one
        call. It compiles per number of rows (padded to a power of two): a replace that
        draws most leaves in batches cuts few rows and compiles a small program (cutting
        all 64 keys of a call compiled 0.3 s on a 2-core CPU)."""
        idx = np.zeros(_bucket(len(js)), np.int32)
        idx[: len(js)] = js
        rows = _rows(self.stack, idx, legacy)
        return (unstack(rows) if len(idx) > UNSTACKED_MAX else rows)[: len(js)]


@functools.partial(jax.jit, static_argnums=2)
def _rows(stack: jax.Array, idx: jax.Array, legacy: bool) -> Any:
    picked = stack[idx]
    if legacy:
        picked = jax.random.key_data(picked)
    return picked if len(idx) > UNSTACKED_MAX else tuple(picked[i] for i in range(len(idx)))


@jax.jit
def _derive(key: jax.Array, hashes: jax.Array) -> jax.Array:
    fold = jax.random.fold_in
    return jax.vmap(lambda h: fold(fold(key, h[0]), h[1]))(hashes)


_split = jax.jit(jax.random.split, static_argnums=1)


@functools.lru_cache(maxsize=256)  # a model's selection recurs call after call
def _hashes(segs: tuple[tuple[str | int, ...], ...]) -> np.ndarray:
    """The path hashes, padded to a bucket. Shared between calls and never written, but
    left writeable: a jitted call takes a read-only numpy argument by a slow road
    (measured: 106 us a call, against 39 us writeable, more than a small model's walk)."""
    n = len(segs)
    hashes = np.zeros((_bucket(n), 2), np.uint32)
    if n:
        hashes[:n] = [path_hash(s) for s in segs]
    return hashes


def path_keys(key: jax.Array, segs: Sequence[Sequence[str | int]]) -> Keys:
    """One key per path, `fold_in(fold_in(key, h0), h1)` with `(h0, h1) = path_hash(segs)`,
    derived in one vectorised call (padded to a power of two so few shapes compile)."""
    return Keys(_derive(key, _hashes(tuple(map(tuple, segs)))), len(segs))


def split_keys(key: jax.Array, n: int) -> Keys:
    """`jax.random.split(key, n)`: keys in traversal order, as optax's `tree_split_key_like`."""
    return Keys(_split(key, n), n)


def key_for_path(key: Any, path_or_segs: Sequence[Any]) -> jax.Array:
    """The key `replace(..., key=key)` gives the node at this path (policy `"path"`).

    Useful to reproduce one leaf's draw.

    **Arguments:**

    - `key`: the key passed to `replace` (typed or legacy `uint32[2]`).
    - `path_or_segs`: a key path (as `tw.paths` returns it) or its segments, e.g.
      `("enc", "w")`. A plain string such as `"enc/w"` is an `ArgumentError`: it is not
      split on `/`, because a key may hold `/` itself (Haiku's `"mlp/~/linear_0"` is ONE
      segment), so the string would be ambiguous.

    **Returns:**

    A key of the same kind as `key` (typed, or legacy `uint32[2]`).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        tree = {"enc": {"w": jnp.zeros(3)}}
        got = tw.replace(tree, "enc/w", lambda p, x, k: jax.random.normal(k, x.shape),
                         key=jax.random.key(0))
        k = tw.key_for_path(jax.random.key(0), ("enc", "w"))
        assert (got["enc"]["w"] == jax.random.normal(k, (3,))).all()
        ```
    """
    if isinstance(path_or_segs, str | bytes):
        segs = tuple(str(path_or_segs).split("/"))
        raise ArgumentError(
            f"tw.key_for_path takes a key path or its segments, not the string "
            f"{path_or_segs!r:.80} (it would be read character by character, and a key may "
            f"hold '/' itself): pass the segments, e.g. {segs!r:.80}, "
            f"or a path from tw.paths."
        )
    typed, legacy = as_typed_key(key)
    segs = tuple(path_or_segs)
    if segs and not all(isinstance(s, str | int) for s in segs):
        segs = path_segments(segs)
    h0, h1 = path_hash(segs)
    k = jax.random.fold_in(jax.random.fold_in(typed, np.uint32(h0)), np.uint32(h1))
    return jax.random.key_data(k) if legacy else k

"""Wrong tree transforms, each of a kind people write, and the `treewalk.testing` check
that must catch it. `tests/test_planted_bugs.py` runs each check once with hypothesis'
defaults; run this file to measure how often each is caught in fresh random runs:

    python tests/planted_bugs.py [RUNS]

prints, per bug, the check, in how many of RUNS runs (10 by default; hypothesis' default
settings, no example database) it raised an `AssertionError` saying what the bug broke,
and the seconds per check: with the check's default trees (its zoo of one tree of each
kind, then random trees) and with the random trees only (`trees=pytrees()`).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import settings
from penzai.core.variables import Parameter

import treewalk as tw
from treewalk.testing import (
    check_commutes_with_jit,
    check_commutes_with_vmap,
    check_idempotent,
    check_key_deterministic,
    check_matches_reference,
    check_only_selected,
    check_pure,
    check_structure_preserving,
    params_trees,
    pytrees,
)

FLOATS = tw.arrays & tw.predicate(lambda p, x: jnp.issubdtype(x.dtype, jnp.inexact))
BOXES = (nnx.Variable, nn.Partitioned, Parameter)


def _is_float(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(x.dtype, jnp.inexact)


# ------------------------------------------------------------------ the wrong transforms


def reverse_layers(tree):
    """Meant to return the tree with its lists in reverse order: reverses the input's."""
    if isinstance(tree, list):
        tree.reverse()  # a bug: the input's own list
    if isinstance(tree, list | tuple | dict):
        for child in tree.values() if isinstance(tree, dict) else tree:
            reverse_layers(child)
    return tree


def halve_weights(tree):
    """Halves every float array, writing the results into the input's dicts."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            tree[k] = halve_weights(v)  # a bug: the input's own dict
        return tree
    if isinstance(tree, list | tuple) and type(tree) in (list, tuple):
        return type(tree)(halve_weights(c) for c in tree)
    return tree / 2 if _is_float(tree) else tree


def decay_nnx(tree):
    """Decays NNX variables the NNX way, in place: `variable[...] = ...`."""
    flat = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for v in flat:
        if isinstance(v, nnx.Variable):
            v[...] = jnp.zeros_like(v[...])  # a bug: the input's own variable
    return tree


def scale_by_lr(tree):
    """Scales floats by a learning rate kept as a float32 array: float16 and bfloat16
    arrays come back float32."""
    lr = jnp.float32(0.5)  # a bug: not weakly typed, so it promotes
    return jax.tree.map(lambda x: x * lr if _is_float(x) else x, tree)


def noisy(tree, key):
    """Adds noise, from numpy's global RNG instead of the key."""

    def fn(path, x, k):
        return (x + np.random.normal(size=x.shape)).astype(x.dtype)  # a bug: not `k`

    return tw.replace(tree, FLOATS, fn, key=key, strict=False)


def halve_first_block(tree):
    """Meant to halve the first block: counts blocks from 1."""
    first = tw.glob("blocks/1/**") & tw.params  # a bug: blocks count from 0
    return tw.replace(tree, first, lambda p, x, k: x / 2, strict=False)


def trainable_only(tree):
    """Scales the trainable arrays, and forgets to put the rest back (`eqx.combine`)."""
    params, _static = eqx.partition(tree, eqx.is_inexact_array)
    return jax.tree.map(lambda x: x * 1, params)  # a bug: the other leaves are None


def reinit_per_path(tree, key):
    """Re-initialises each float array from its path's key: a tied array (one array at
    two paths) gets two different values."""

    def fn(path, x):
        if _is_float(x) and x.size:
            return jax.random.normal(tw.key_for_path(key, path), x.shape, x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(fn, tree)


def double_params(tree):
    """Doubles what boxes hold, and forgets to put the box back."""

    def fn(x):
        if isinstance(x, nnx.Variable):
            x = x[...]  # a bug: the box and its metadata are gone
        elif isinstance(x, BOXES):
            x = x.value
        return x * 2 if _is_float(x) else x

    return jax.tree.map(fn, tree, is_leaf=lambda x: isinstance(x, BOXES))


def flatten_weights(tree):
    """Reshapes weights to vectors, with `tw.replace`'s shape check turned off."""
    return tw.replace(tree, tw.arrays, lambda p, x, k: x.reshape(-1), check=False, strict=False)


def hashed_keys(tree, key):
    """Draws each path's noise from a key folded with `hash()` of its path: the same in
    one process, another in the next (`PYTHONHASHSEED`)."""

    def fn(path, x, k):
        k = jax.random.fold_in(key, hash(tw.path_str(path)) % 2**31)  # a bug: hash()
        return x + jax.random.normal(k, x.shape, x.dtype)

    return tw.replace(tree, FLOATS, fn, key=key, strict=False)


def scale_kernels(tree):
    """Scales `(in, out)` kernels by 1/sqrt(fan_in), reading the fan off the wrong axis."""

    def fn(path, x, key):
        return x / jnp.sqrt(x.shape[-1]).astype(x.dtype)  # a bug: fan_in is shape[0]

    return tw.replace(tree, "**/kernel", fn, strict=False)


def fan_in_reference(path, x):
    return x / jnp.sqrt(x.shape[0]).astype(x.dtype)


def squash(tree):
    """Meant to project floats into [-1, 1]: tanh is no projection."""
    return tw.replace(tree, FLOATS, lambda p, x, k: jnp.tanh(x), strict=False)


def standardise(tree):
    """Standardises each weight with a Python float of its std: needs concrete values."""

    def fn(path, x, k):
        return x / (float(jnp.std(x)) + 1)  # a bug: float() of a traced value under jit

    return tw.replace(tree, tw.params, fn, strict=False)


def orthogonalise(tree):
    """Orthogonalises matrices in numpy through `jax.pure_callback`: fine eagerly and
    under `jit`, but it has no `vmap_method`, so `vmap` refuses it."""

    def qr(x):
        return np.linalg.qr(np.asarray(x, np.float32))[0].astype(x.dtype)

    def fn(path, x, k):
        if x.ndim != 2 or x.shape[0] < x.shape[1]:
            return x
        return jax.pure_callback(qr, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    return tw.replace(tree, tw.params, fn, strict=False)


# ------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class Bug:
    name: str
    check: str
    #: What the failure's first line says: caught for the right reason.
    says: str
    #: `run(settings, trees)`: the check, on `trees` (`None`: the check's default, its
    #: zoo tried first, then random trees).
    run: Callable[[settings, Any], None]
    #: The random trees of the check's default, without its zoo.
    random: Callable[[], Any] = pytrees


BUGS = [
    Bug(
        "in-place list reversal",
        "check_pure",
        "replaced in place|changed in place",
        lambda s, t: check_pure(reverse_layers, settings=s, trees=t),
    ),
    Bug(
        "in-place dict update",
        "check_pure",
        "replaced in place",
        lambda s, t: check_pure(halve_weights, settings=s, trees=t),
    ),
    Bug(
        "NNX variable written in place",
        "check_pure",
        "in place",
        lambda s, t: check_pure(decay_nnx, settings=s, trees=t),
    ),
    Bug(
        "dtype upcast",
        "check_structure_preserving",
        r"(float16|bfloat16)\[.*\] became float32",
        lambda s, t: check_structure_preserving(scale_by_lr, settings=s, trees=t),
    ),
    Bug(
        "global RNG instead of the key",
        "check_key_deterministic",
        "two calls with the same key differ",
        lambda s, t: check_key_deterministic(noisy, settings=s, trees=t),
    ),
    Bug(
        "wrong block changed",
        "check_only_selected",
        r"at 'blocks/1/.*', not selected by",
        lambda s, t: check_only_selected(halve_first_block, "blocks/0/**", settings=s, trees=t),
        params_trees,
    ),
    Bug(
        "leaf dropped",
        "check_structure_preserving",
        "became (a bare )?None",
        lambda s, t: check_structure_preserving(trainable_only, settings=s, trees=t),
    ),
    Bug(
        "tie broken",
        "check_structure_preserving",
        "the tie between .* is broken",
        lambda s, t: check_structure_preserving(reinit_per_path, settings=s, trees=t),
    ),
    Bug(
        "box unwrapped",
        "check_structure_preserving",
        "box became a bare",
        lambda s, t: check_structure_preserving(double_params, settings=s, trees=t),
    ),
    Bug(
        "shape changed under check=False",
        "check_structure_preserving",
        r"\[.*\] became \w+\[",
        lambda s, t: check_structure_preserving(flatten_weights, settings=s, trees=t),
    ),
    Bug(
        "key from hash() of the path",
        "check_key_deterministic(across_processes)",
        r"another process \(PYTHONHASHSEED=\d+\) gives another tree",
        lambda s, t: check_key_deterministic(
            hashed_keys, across_processes=True, settings=s, trees=t
        ),
    ),
    Bug(
        "fan read off the wrong axis",
        "check_matches_reference",
        "the selected leaf is not what the reference says",
        lambda s, t: check_matches_reference(
            scale_kernels, "**/kernel", fan_in_reference, settings=s, trees=t
        ),
        params_trees,
    ),
    Bug(
        "tanh as a projection",
        "check_idempotent",
        "applied twice differs",
        lambda s, t: check_idempotent(squash, settings=s, trees=t),
    ),
    Bug(
        "float() of a traced value",
        "check_commutes_with_jit",
        "under jax.jit raised .*ConcretizationTypeError",
        lambda s, t: check_commutes_with_jit(standardise, settings=s, trees=t),
        lambda: pytrees(penzai=False),
    ),
    Bug(
        "pure_callback without vmap_method",
        "check_commutes_with_vmap",
        "under jax.vmap raised .*vmap_method",
        lambda s, t: check_commutes_with_vmap(orthogonalise, settings=s, trees=t),
        lambda: pytrees(penzai=False),
    ),
]


def defaults() -> settings:
    """Hypothesis' default settings (not a profile's), with no example database: each
    run draws fresh random examples."""
    return settings(settings.get_profile("default"), database=None)


def caught(bug: Bug, s: settings, trees: Any = None) -> bool:
    """Did `bug`'s check raise an `AssertionError` that says what `bug.says`?"""
    try:
        bug.run(s, trees)
    except AssertionError as err:
        return re.search(bug.says, str(err).splitlines()[0]) is not None
    return False


def main(runs: int = 10) -> None:
    """For each bug: caught in how many of `runs` runs, and seconds per check, with the
    check's default trees (its zoo, then random ones) and with random trees only."""
    width = max(len(b.name) for b in BUGS)
    cw = max(len(b.check) for b in BUGS)
    head = ["bug".ljust(width), "check".ljust(cw), "caught", "s/check", "random only", "s/check"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
    for bug in BUGS:
        cells = [bug.name.ljust(width), bug.check.ljust(cw)]
        for trees in (lambda: None, bug.random):
            hits, start = 0, time.perf_counter()
            for _ in range(runs):
                hits += caught(bug, defaults(), trees())
            per = (time.perf_counter() - start) / runs
            cells += [f"{hits:>3}/{runs:<2}", f"{per:7.2f}"]
        cells[4] = cells[4].ljust(len("random only"))
        print("| " + " | ".join(cells) + " |")
        sys.stdout.flush()


if __name__ == "__main__":
    # The bugs by their module's name, not __main__'s: another process imports them.
    import planted_bugs

    planted_bugs.main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)

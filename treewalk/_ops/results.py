"""What `replace` puts at the selected nodes: `fn`'s results, checked and placed, with
ties computed once, keys derived at once and same-shape draws batched."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from jax.core import Tracer
from jax.sharding import SingleDeviceSharding

from .._core.errors import (
    ArgumentError,
    ReplacementError,
    TreewalkError,
    call_user,
    callback_error,
)
from .._core.keys import Keys, as_typed_key, path_keys, split_keys
from .._core.kinds import ARRAY_TYPES, flags_of, tie_id
from .._core.node import Hits, Node
from .._core.paths import Path, show_path
from .._core.placement import constrain, eager, stack_sharding, unstack
from .._core.placement import place as _place
from .._core.types import ReplaceFn
from .._select.algebra import Selector, brief


def check_fn(fn: Any, rest: int = 0) -> None:
    """An `ArgumentError` for the first mistakes with `fn`: a numpy or `jax.numpy`
    function (`jnp.zeros_like`: it would take the path for the array), a
    `jax.nn.initializers` function `(key, shape, dtype)` passed unwrapped, or a function
    that cannot take `(path, node, key)`."""
    if hasattr(fn, "tw_call") or hasattr(fn, "tw_batched"):
        return  # an `fn` with context, such as treewalk's own helpers
    module = getattr(fn, "__module__", None) or ""
    if module.split(".")[0] == "numpy" or module.startswith(("jax.numpy", "jax._src.numpy")):
        short = "np" if module.startswith("numpy") else "jnp"
        name = getattr(fn, "__name__", "fn")
        helper = {"zeros_like": " or tw.zeros", "ones_like": " or tw.ones"}.get(name, "")
        raise ArgumentError(
            f"fn {short}.{name} is an array function, not an `fn(path, node, key)`: "
            f"tw.replace calls fn with the path first, which {short}.{name} would take "
            f"for the array. Write `lambda path, x, key: {short}.{name}(x)`{helper}."
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: let it run
        return
    names = list(sig.parameters)
    what = getattr(fn, "__qualname__", type(fn).__name__)
    if names[:2] == ["key", "shape"]:
        raise ArgumentError(
            f"fn {what}{sig} is an initializer `(key, shape, dtype)`, not an "
            f"`fn(path, node, key)`: wrap it, e.g. fn=tw.initializer("
            f"jax.nn.initializers.lecun_normal()), or use tw.init.lecun_normal()."
        )
    try:
        sig.bind(*[None] * (3 + rest))
    except TypeError:
        if rest:
            raise ArgumentError(
                f"fn {what}{sig} cannot be called as fn(path, node, key, "
                f"{', '.join(f'rest{j}' for j in range(rest))}): with {rest} tree(s) "
                "after fn, tw.replace passes their nodes at the same path after the key."
            ) from None
        raise ArgumentError(
            f"fn {what}{sig} cannot be called as fn(path, node, key): tw.replace calls it "
            f"with three arguments (key is None when no key= is given). Write, e.g., "
            f"`lambda path, node, key: ...`, or tw.initializer(init) for an initializer."
        ) from None


def _apply_each(
    hits: Hits,
    todo: list[int],
    rest: list[int],
    key_list: list[Any],
    fn: ReplaceFn,
    sel: Selector,
    check: bool,
    results: list[Any],
    others: list[list[Any]] | None = None,
) -> None:
    """`results[todo[j]]`: `fn`'s result for each node `todo[j]`, `j` in `rest`, called
    one by one (`tw_call(n, key)` for an `fn` with context), checked and placed."""
    tw_call = getattr(fn, "tw_call", None)
    if tw_call is not None or hasattr(fn, "tw_batched"):
        others = None  # the helpers and `tw.init` draw as with one tree
    one = others[0] if others is not None and len(others) == 1 else None
    with_rest: Callable[..., Any] = fn  # `fn(path, node, key, *rest_nodes)`
    what = (
        f"{fn!r} (selector {brief(sel)})" if tw_call is not None else f"fn (selector {brief(sel)})"
    )
    bases, entries, nodes = hits.bases, hits.entries, hits.nodes
    for j in rest:
        i = todo[j]
        e, node = entries[i], nodes[i]
        path = bases[i] if e is None else bases[i] + (e,)  # `hits.path(i)`, inlined
        try:  # `call_user`, inlined: a frame per node on 100,000 leaves is 10% of a call
            if tw_call is not None:
                new = tw_call(hits[i], key_list[j])
            elif others is None:
                new = fn(path, node, key_list[j])
            elif one is not None:
                new = with_rest(path, node, key_list[j], one[i])
            else:
                new = with_rest(path, node, key_list[j], *[column[i] for column in others])
        except TreewalkError:
            raise
        except Exception as err:
            raise callback_error(what, path, err) from err
        results[i] = new if new is node else fit(path, node, new, sel, check)


def fit(path: Path, old: Any, new: Any, sel: Selector, check: bool) -> Any:
    """`new`, which `fn` returned for `old`, checked (with `check`) and placed where `old`
    lives. Eager arrays on one device, the common case, take two type tests and an aval
    comparison; a node `fn` returned as it was takes one."""
    if new is old:
        return new
    if eager[type(old)] and eager[type(new)] and type(old.sharding) is SingleDeviceSharding:
        if check and new.aval != old.aval:
            check_replacement(Node(path, old, None, None), new, sel)
        return new
    if check:
        check_replacement(Node(path, old, None, None), new, sel)
    return _place(new, old)


def check_replacement(n: Node, new: Any, sel: Selector) -> None:
    old = n.node
    if not isinstance(old, ARRAY_TYPES):
        return
    shape, dtype = getattr(new, "shape", None), getattr(new, "dtype", None)
    if shape is None or dtype is None:
        raise ReplacementError(
            f"fn (selector {brief(sel)}) replaced the array at {show_path(n.path)} "
            f"(shape {tuple(old.shape)}, dtype {old.dtype}) with a {type(new).__name__}. "
            f"Return an array, or pass check=False if the change is intended."
        )
    if tuple(shape) != tuple(old.shape) or dtype != old.dtype:
        raise ReplacementError(
            f"fn (selector {brief(sel)}) changed the array at {show_path(n.path)} from "
            f"shape {tuple(old.shape)}, dtype {old.dtype} to shape {tuple(shape)}, dtype "
            f"{dtype}. Return an array of the same shape and dtype (e.g. "
            f"`.astype(x.dtype)`), or pass check=False if the change is intended."
        )


def results(
    hits: Hits,
    fn: ReplaceFn,
    key: Any,
    policy: str,
    sel: Selector,
    check: bool,
    others: list[list[Any]] | None = None,
) -> list[Any]:
    """`fn`'s result for each selected node: ties computed once, keys derived at once;
    `others[t][i]`, tree `t`'s node at hit `i`'s path, passed after the key."""
    # Ties: the same array object at several selected paths is computed once.
    nodes = hits.nodes
    owner = list(range(len(hits)))
    tied = False
    if len(set(map(id, nodes))) < len(nodes):  # some object is selected twice
        first: dict[int, int] = {}
        for i, node in enumerate(nodes):
            tie = tie_id(node, flags_of(node))
            if tie is not None:
                j = owner[i] = first.setdefault(tie, i)
                tied = tied or j != i
    todo = [i for i in range(len(hits)) if owner[i] == i] if tied else owner

    # Keys, one vectorised derivation for all of them.
    legacy = False
    keys = None
    if key is not None:
        typed, legacy = as_typed_key(key)
        if policy == "path":
            keys = path_keys(typed, [hits.segs(i) for i in todo])
        else:
            keys = split_keys(typed, len(todo))

    results = _compute(hits, todo, keys, legacy, fn, sel, check, others)
    return [results[j] for j in owner] if tied else results


def _compute(
    hits: Hits,
    todo: list[int],
    keys: Keys | None,
    legacy: bool,
    fn: ReplaceFn,
    sel: Selector,
    check: bool,
    others: list[list[Any]] | None = None,
) -> list[Any]:
    """`fn`'s result for every node in `todo` (at its index in `hits`), batched by shape
    and dtype where `fn` can (an `fn` that draws takes no nodes of other trees)."""
    results: list[Any] = [None] * len(hits)
    batched = getattr(fn, "tw_batched", None)
    rest = list(range(len(todo)))  # positions in todo (and in keys)
    key_arr = None if keys is None else keys.stack
    if batched is not None:
        signature = getattr(fn, "tw_signature", batch_signature)
        what = f"{fn!r} (selector {brief(sel)})"
        # Per signature (and layout): the positions in `todo`, and the hits' Nodes.
        groups: dict[Any, tuple[list[int], list[Node]]] = {}
        traced = isinstance(key_arr, Tracer)
        limit = STACK_MAX if traced or _traced(hits) else EAGER_STACK_MAX
        nodes = hits.nodes
        for j, i in enumerate(todo):
            if _size(nodes[i]) > limit:
                continue  # big leaves are drawn one by one: a stack would double the peak
            n = hits[i]
            try:  # `call_user`, inlined (one call per leaf)
                sig = signature(n)
            except TreewalkError:
                raise
            except Exception as e:
                raise callback_error(what, n.path, e) from e
            if sig is not None:
                # Sharded leaves are stacked only with leaves of the same layout.
                ok, layout = stack_sharding(nodes[i], traced)
                if ok:
                    js, ns = groups.setdefault((sig, layout), ([], []))
                    js.append(j)
                    ns.append(n)
        grouped: set[int] = set()
        for (sig, layout), (js, ns) in groups.items():
            if len(js) < 2:
                continue
            grouped.update(js)
            ks = None
            if key_arr is not None:
                contiguous = js[-1] - js[0] + 1 == len(js)
                ks = key_arr[js[0] : js[-1] + 1] if contiguous else key_arr[np.asarray(js)]
            stacked = call_user(what, batched, ns[0].path, ns, ks, sig)
            if layout is not None and not isinstance(stacked, list | tuple):
                stacked = constrain(stacked, layout)  # rows given apart are placed below
            for j, value in zip(js, unstack(stacked), strict=True):
                results[todo[j]] = _place(value, nodes[todo[j]])
        rest = [j for j in range(len(todo)) if j not in grouped]
    if rest:
        key_list: list[Any] = [None] * len(todo)
        if keys is not None:
            for j, k in zip(rest, keys.rows(rest, legacy), strict=True):
                key_list[j] = k
        _apply_each(hits, todo, rest, key_list, fn, sel, check, results, others)
    return results


#: Leaves with more elements than this are never stacked. Stacking saves one dispatch
#: (~50 us) per leaf, which only matters for small leaves, and a stack of big leaves
#: costs its own size again in memory (the stack, then its slices): materialising a 1 GB
#: model of 32 big leaves peaked at 4x the model's bytes with stacking, ~1x without.
STACK_MAX = 1 << 16
#: Eagerly, only small leaves are stacked: a stack saves a dispatch per leaf, which is
#: all a small leaf costs, but a (256, 256) draw costs more than its dispatch, and a
#: vmapped eager draw is traced anew on every call (measured: 3 such leaves drawn in a
#: stack took 3.8 ms, one by one 2.0 ms). Under `jax.jit` stacking also saves compile
#: time (one RNG call instead of many), so there every leaf up to `STACK_MAX` is.
EAGER_STACK_MAX = 1 << 12


def _traced(hits: Hits) -> bool:
    return bool(hits) and isinstance(hits.nodes[0], Tracer)


def _size(node: Any) -> int:
    size = getattr(node, "size", None)
    if size is None:
        return 0
    return int(size)


def batch_signature(n: Node) -> tuple[Any, Any] | None:
    """`(shape, dtype)` if the node can be drawn in a batch with others like it, else `None`.

    Whether a node spread over several devices may be stacked, and how, is decided apart
    from the signature (`stack_sharding`): stacking must never gather it.
    """
    node = n.node
    if not isinstance(node, ARRAY_TYPES):
        return None
    return tuple(node.shape), node.dtype

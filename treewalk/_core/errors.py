"""The exceptions treewalk raises. Every one is a `TreewalkError`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .paths import show_path


class TreewalkError(Exception):
    """Base class of every error treewalk raises on bad input.

    Each subclass is also a `ValueError`, a `TypeError` or (`CallbackError`) a
    `RuntimeError`, so existing `except` clauses keep working. Messages name the path
    (as `path_str` renders it) and the selector involved, and say how to fix the call.
    """


class ArgumentError(TreewalkError, TypeError):
    """An argument has the wrong type, e.g. a non-callable `fn` or `is_leaf`, a `fn`
    that cannot take `(path, node, key)`, a numpy or `jax.numpy` function as `fn`
    (`jnp.zeros_like`: write `lambda path, x, key: jnp.zeros_like(x)`), an initializer
    `(key, shape, dtype)` passed unwrapped (wrap it: `tw.initializer(init)`), a plain
    string given to `tw.key_for_path` as a path, or `wrt=` for a tree that is not NNX.
    A `TypeError`."""


class SelectorError(TreewalkError, TypeError):
    """Something that is not a selector was passed where a selector is expected, or a
    selector was built without what it needs (`tw.name()`, `tw.of_type()` with nothing).
    A `TypeError`."""


class PatternError(TreewalkError, ValueError):
    """A glob or regex pattern is empty or malformed, or a regex is a bytes pattern. A
    `ValueError`."""


class CallbackError(TreewalkError, RuntimeError):
    """A user callback (`fn`, `exclude`, `is_leaf`, a predicate) raised.

    The original exception is chained as `__cause__`; the message names the path the
    walk was at. A `RuntimeError`.
    """


class NoMatchError(TreewalkError, ValueError):
    """A strict call (`replace`, `mask`, `labels`, `nnx_filter` with a model; strict
    by default) was given a selector that selects nothing, or one with a part (a
    `tw.name`, glob, regex, `tw.of_type` or `tw.inside`) that matches nothing in the
    tree. The message names the part and the closest paths; `strict=False` allows it.
    A `ValueError`."""


class ReplacementError(TreewalkError, ValueError):
    """`fn` returned something that does not fit where it goes (shape or dtype changed).
    A `ValueError`."""


class StructureError(TreewalkError, ValueError):
    """A tree lacks a path it was expected to have: a `tw.where` function was given a tree
    of another structure than the one it was built on. A `ValueError`."""


class LabelError(TreewalkError, ValueError):
    """`labels` found a leaf claimed by two labels, or by none and no `default`. A
    `ValueError`."""


class PRNGKeyError(TreewalkError, TypeError):
    """The `key=` argument is not a JAX PRNG key. A `TypeError`."""


class InitError(TreewalkError, ValueError):
    """An initialiser cannot be applied to a leaf (dtype, shape or unknown fan), or a
    `tw.constant` value does not fit the leaf's dtype. A `ValueError`."""


class LoadError(TreewalkError, ValueError):
    """`tw.load` found destination arrays nothing loads into, source keys nothing uses, or
    arrays whose shape or dtype does not fit; the message lists all of them at once, and
    `.plan` holds the whole `tw.LoadPlan`. A `ValueError`."""

    #: The whole `tw.LoadPlan` (typed `Any` here: errors sit below the checkpoint code).
    plan: Any = None


class LoadWarning(UserWarning):
    """`tw.load(..., strict=False)` left destination arrays unloaded or source keys
    unused: the warning counts them (`tw.load_plan` lists them)."""


def call_user(what: str, f: Callable[..., Any], path: Sequence[Any], *args: Any) -> Any:
    """`f(*args)`, for a user callback `f` called at `path`: an exception it raises is
    re-raised as a `CallbackError` naming the path, chained to the original. treewalk's
    own errors (raised by a helper used as `fn`) pass through as they are."""
    try:
        return f(*args)
    except TreewalkError:
        raise
    except Exception as e:
        raise callback_error(what, path, e) from e


def callback_error(what: str, path: Sequence[Any], e: Exception) -> CallbackError:
    """The `CallbackError` for `e`, raised by the user callback `what` at `path`."""
    return CallbackError(f"{what} raised {type(e).__name__} at path {show_path(path)}: {e}")


def check_callable(name: str, f: Any, *, optional: bool = False, hint: str) -> None:
    """An `ArgumentError` unless `f` is callable (or `None`, when `optional`)."""
    if f is None and optional:
        return
    if not callable(f):
        raise ArgumentError(
            f"`{name}` must be callable, got {type(f).__name__}: {f!r:.60}. "
            f"Pass a function, e.g. `{name}={hint}`."
        )

"""The exceptions treewalk raises. Every one is a `TreewalkError`."""

from __future__ import annotations


class TreewalkError(Exception):
    """Base class of every error treewalk raises on bad input.

    Each subclass is also a `ValueError` or a `TypeError`, so existing `except` clauses
    keep working. Messages name the path (as `path_str` renders it) and the selector
    involved, and say how to fix the call.
    """


class ArgumentError(TreewalkError, TypeError):
    """An argument has the wrong type, e.g. a non-callable `fn`."""


class SelectorError(TreewalkError, TypeError):
    """Something that is not a selector was passed where a selector is expected."""


class PatternError(TreewalkError, ValueError):
    """A glob or regex pattern is empty or malformed."""


class CallbackError(TreewalkError, RuntimeError):
    """A user callback (`fn`, `exclude`, `is_leaf`, a predicate) raised.

    The original exception is chained as `__cause__`; the message names the path the
    walk was at.
    """


class NoMatchError(TreewalkError, ValueError):
    """`replace(..., strict=True)` was given a selector that matches nothing."""


class ReplacementError(TreewalkError, ValueError):
    """`fn` returned something that does not fit where it goes (shape or dtype changed)."""


class StructureError(TreewalkError, ValueError):
    """A tree lacks a path it was expected to have: a `tw.where` function was given a tree
    of another structure than the one it was built on."""


class LabelError(TreewalkError, ValueError):
    """`labels` found a leaf claimed by two labels, or by none and no `default`."""


class PRNGKeyError(TreewalkError, TypeError):
    """The `key=` argument is not a JAX PRNG key."""


class InitError(TreewalkError, ValueError):
    """An initialiser cannot be applied to a leaf (dtype, shape or unknown fan)."""

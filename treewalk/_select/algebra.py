"""The `Selector` type and its algebra, and the three selectors other values are
coerced to: `glob` (a `str`), `of_type` (a class), `predicate` (a callable)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._core.errors import PatternError, SelectorError, call_user
from .._core.node import Node
from .._core.paths import BoxKey, Path
from .glob import STAR2, compile_segment, match_segs


class Selector:
    """Base class of selectors. Compose them with `&`, `|` and `~`.

    A selector decides, for each node of a tree, whether a call acts on it. Selectors
    are immutable, hashable and compare by value; their `repr` reads like the code
    that built them. Wherever a selector is taken, a `str` means
    [`tw.glob`][treewalk.glob], a class means [`tw.of_type`][treewalk.of_type] and
    any other callable `(path, node) -> bool` means [`tw.predicate`][treewalk.predicate].
    """

    __slots__ = ()

    def match(self, n: Node) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def compile(self) -> Matcher:
        """`n -> bool`, equal to `self.match`, for one pass over one tree. It may remember
        answers, and expose a memo by last key entry (`last_memo`) or by type
        (`type_memo`, read outside boxes) that the engine reads at every node before it
        calls the matcher; a memo holds only answers the matcher gave or would give."""
        return self.match

    def _key(self) -> tuple[Any, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __and__(self, other: Any) -> Selector:
        return And(self, as_selector(other))

    def __rand__(self, other: Any) -> Selector:
        return And(as_selector(other), self)

    def __or__(self, other: Any) -> Selector:
        return Or(self, as_selector(other))

    def __ror__(self, other: Any) -> Selector:
        return Or(as_selector(other), self)

    def __invert__(self) -> Selector:
        return Not(self)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new selector instead")

    def _init(self, **fields: Any) -> None:
        for k, v in fields.items():
            object.__setattr__(self, k, v)


Matcher = Callable[[Node], bool]


def by_last(test: Callable[[Node], bool]) -> Matcher:
    """A matcher for a selector that looks at the last segment only, its answers
    remembered per last key entry (100,000 leaves have a few dozen distinct ones); a
    box's value by the entry before its `BoxKey` (an NNX bias by `bias`)."""
    memo: dict[Any, bool] = {}

    def m(n: Node) -> bool:
        path = n.path
        if path:
            e = path[-1]
            if type(e) is BoxKey:
                if len(path) < 2 or type(path[-2]) is BoxKey:
                    return test(n)
                e = path[-2]
            try:
                hit = memo.get(e)
            except TypeError:  # an unhashable key entry
                return test(n)
            if hit is None:
                hit = memo[e] = test(n)
            return hit
        return test(n)

    m.last_memo = memo  # type: ignore[attr-defined]  # the engine reads it inline
    return m


def as_selector(x: Any, *, what: str = "selector") -> Selector:
    """Coerce `x` to a selector: `str`/tuple → glob, class → of_type, callable → predicate."""
    if isinstance(x, Selector):
        return x
    if isinstance(x, str):
        return glob(x)
    if isinstance(x, tuple) and x and all(isinstance(s, str | int) for s in x):
        return glob(x)
    if isinstance(x, type):
        return of_type(x)
    if callable(x):
        return predicate(x)
    raise SelectorError(
        f"{what} must be a selector, a glob string, a class or a callable "
        f"`(path, node) -> bool`; got {type(x).__name__}: {x!r:.60}. "
        f"For example `tw.glob('**/bias')`, `tw.name('kernel', 'weight')`, "
        f"`tw.of_type(eqx.nn.Linear)`."
    )


class glob(Selector):
    """Select nodes whose path matches a segment-wise glob pattern.

    The pattern is split on `/` into segment patterns and anchored at the root:

    | pattern | matches |
    |---|---|
    | `"**/bias"` | every `bias`, at any depth |
    | `"bias"` | only a top-level `bias` |
    | `"layers/*/weight"` | `weight` one level below `layers` |
    | `"encoder/**"` | `encoder` and everything below it |
    | `"**/layer_[0-3]/*"` | children of `layer_0` … `layer_3` |

    `*` matches exactly one segment (it never crosses a `/`), `**` any number of
    segments including none, `?` and `[...]` one character inside a segment. Integer
    segments (list indices) match their decimal text. For a key that itself holds `/`
    (Haiku's `"mlp/~/linear_0"`), pass a tuple of segment patterns:
    `tw.glob(("mlp/~/linear_0", "w"))`, or use `*`: `"*/w"`.

    The pattern is compiled once, when the selector is built.

    !!! Example

        ```python
        import treewalk as tw

        tree = {"enc": {"layers": [{"w": 1, "bias": 0}, {"w": 2, "bias": 0}]}}
        assert [tw.path_str(p) for p in tw.paths(tree, "**/bias")] == [
            "enc/layers/0/bias", "enc/layers/1/bias"]
        assert tw.paths(tree, "bias") == []
        ```
    """

    __slots__ = ("pattern", "_pat", "_suffix", "_fixed")

    def __init__(self, pattern: str | tuple[str | int, ...]) -> None:
        if isinstance(pattern, tuple):
            parts = [str(p) for p in pattern]
            if not parts or any(p == "" for p in parts):
                raise PatternError(
                    f"glob {pattern!r}: empty segment pattern. Every element of a tuple "
                    f"pattern must be a non-empty segment pattern, e.g. ('mlp/~/linear_0', 'w')."
                )
        elif isinstance(pattern, str):
            parts = pattern.split("/")
            if pattern == "" or any(p == "" for p in parts):
                raise PatternError(
                    f"glob {pattern!r}: empty segment. Patterns are anchored at the root and "
                    f"have no leading, trailing or double '/': write '**/bias', not '/bias' "
                    f"or 'a//b'. Use '**' to match any depth."
                )
        else:
            raise SelectorError(
                f"glob takes a str or a tuple of segment patterns; got "
                f"{type(pattern).__name__}: {pattern!r:.60}."
            )
        pat = tuple(compile_segment(str(pattern), p) for p in parts)
        # Fast path for the common "**/<literal>": compare the last segment only.
        suffix = pat[1] if len(pat) == 2 and pat[0] is STAR2 and type(pat[1]) is str else None
        fixed = None if any(p is STAR2 for p in pat) else len(pat)
        self._init(pattern=pattern, _pat=pat, _suffix=suffix, _fixed=fixed)

    def match(self, n: Node) -> bool:
        if self._suffix is not None:
            last = n.last
            if last is None:
                return False
            return (last if type(last) is str else str(last)) == self._suffix
        segs = n.segs
        fixed = self._fixed
        if fixed is not None:  # no '**': one pattern segment per path segment
            if len(segs) != fixed:
                return False
            for p, s in zip(self._pat, segs, strict=True):
                if type(s) is not str:
                    s = str(s)
                if not (p == s if type(p) is str else p(s) is not None):
                    return False
            return True
        return match_segs(self._pat, segs)

    def compile(self) -> Matcher:
        return by_last(self.match) if self._suffix is not None else self.match

    def _key(self) -> tuple[Any, ...]:
        return (self.pattern,)

    def __repr__(self) -> str:
        return f"glob({self.pattern!r})"


# ------------------------------------------------------------------------------- by type


class of_type(Selector):
    """Select nodes that are instances of one of `types`, internal nodes included.

    `tw.of_type(eqx.nn.Linear)` selects whole layers: `replace` hands `fn` the layer.
    A value inside a box also matches the box's type: `tw.of_type(nnx.Param)` selects
    the arrays of NNX `Param`s (and not `BatchStat`s).

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import treewalk as tw

        mlp = eqx.nn.MLP(2, 2, 4, 2, key=jax.random.key(0))
        assert len(tw.select(mlp, tw.of_type(eqx.nn.Linear))) == 3
        ```
    """

    __slots__ = ("types", "_cache")

    def __init__(self, *types: type) -> None:
        if not types:
            raise SelectorError(
                "tw.of_type() needs at least one type, e.g. of_type(eqx.nn.Linear)."
            )
        bad = [t for t in types if not isinstance(t, type)]
        if bad:
            raise SelectorError(
                f"tw.of_type takes classes; got {bad[0]!r:.60}. For a test on the node use "
                f"tw.predicate(lambda path, node: ...)."
            )
        self._init(types=tuple(types), _cache={})

    def _is(self, x: Any) -> bool:
        # By type, cached: isinstance on Equinox modules is slow (their __getattribute__).
        t = type(x)
        hit = self._cache.get(t)
        if hit is None:
            hit = self._cache[t] = isinstance(x, self.types)
        return hit

    def match(self, n: Node) -> bool:
        return self._is(n.node) or (n.outer is not None and self._is(n.outer))

    def compile(self) -> Matcher:
        is_ = self._is

        def m(n: Node) -> bool:  # `match`, as a function that can carry the memo
            return is_(n.node) or (n.outer is not None and is_(n.outer))

        m.type_memo = self._cache  # type: ignore[attr-defined]  # read outside boxes
        return m

    def _key(self) -> tuple[Any, ...]:
        return self.types

    def __repr__(self) -> str:
        return f"of_type({', '.join(t.__qualname__ for t in self.types)})"


class predicate(Selector):
    """Select nodes for which `fn(path, node)` is true.

    !!! Example

        ```python
        import jax.numpy as jnp
        import treewalk as tw

        tree = {"small": jnp.ones(2), "big": jnp.ones((64, 64))}
        big = tw.predicate(lambda p, x: getattr(x, "size", 0) > 1000)
        assert [tw.path_str(p) for p in tw.paths(tree, big)] == ["big"]
        ```
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Path, Any], Any]) -> None:
        if not callable(fn):
            raise SelectorError(
                f"tw.predicate takes a callable (path, node) -> bool; got {fn!r:.60}."
            )
        self._init(fn=fn)

    def match(self, n: Node) -> bool:
        return bool(call_user(f"predicate {self!r}", self.fn, n.path, n.path, n.node))

    def _key(self) -> tuple[Any, ...]:
        return (self.fn,)

    def __repr__(self) -> str:
        return f"predicate({getattr(self.fn, '__qualname__', repr(self.fn))})"


# ------------------------------------------------------------------------------- algebra


def _flatten(cls: type, parts: Iterable[Selector]) -> tuple[Selector, ...]:
    out: list[Selector] = []
    for p in parts:
        out.extend(p.parts if isinstance(p, cls) else (p,))  # type: ignore[attr-defined]
    return tuple(out)


class And(Selector):
    """Nodes every part selects (`a & b`)."""

    __slots__ = ("parts",)

    def __init__(self, *parts: Selector) -> None:
        self._init(parts=_flatten(And, parts))

    def match(self, n: Node) -> bool:
        return all(p.match(n) for p in self.parts)

    def compile(self) -> Matcher:
        ms = [p.compile() for p in self.parts]

        def m(n: Node) -> bool:
            for part in ms:
                if not part(n):
                    return False
            return True

        return m

    def _key(self) -> tuple[Any, ...]:
        return self.parts

    def __repr__(self) -> str:
        return " & ".join(f"({p!r})" if isinstance(p, Or) else repr(p) for p in self.parts)


class Or(Selector):
    """Nodes any part selects (`a | b`)."""

    __slots__ = ("parts",)

    def __init__(self, *parts: Selector) -> None:
        self._init(parts=_flatten(Or, parts))

    def match(self, n: Node) -> bool:
        return any(p.match(n) for p in self.parts)

    def compile(self) -> Matcher:
        ms = [p.compile() for p in self.parts]

        def m(n: Node) -> bool:
            for part in ms:
                if part(n):
                    return True
            return False

        return m

    def _key(self) -> tuple[Any, ...]:
        return self.parts

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.parts))


class Not(Selector):
    """Nodes the selector does not select (`~a`)."""

    __slots__ = ("selector",)

    def __init__(self, selector: Selector) -> None:
        self._init(selector=selector)

    def match(self, n: Node) -> bool:
        return not self.selector.match(n)

    def compile(self) -> Matcher:
        inner = self.selector.compile()
        return lambda n: not inner(n)

    def _key(self) -> tuple[Any, ...]:
        return (self.selector,)

    def __repr__(self) -> str:
        s = self.selector
        return f"~({s!r})" if isinstance(s, And | Or) else f"~{s!r}"

    def __invert__(self) -> Selector:
        return self.selector

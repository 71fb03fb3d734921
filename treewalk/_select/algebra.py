"""The `Selector` type and its algebra (`&`, `|`, `~`); `fold`, the one walk over
selector trees (atoms for strictness, reprs, message targets); and what other values
mean as selectors (`as_selector`): a `str` is a `glob`, a class an `of_type`, a callable
a `predicate` (those three are defined here, so that `sel & "**/bias"` can coerce).

**One rule for what a selector picks** (the same in `select`, `paths`, `show`, `mask`,
`labels`, `replace`, `nnx_filter`): a selector is asked about every node, internal nodes
included; a node it picks is handed over whole (`tw.of_type(Linear)` hands the layer, and
`mask`, `labels` and `show` mark every leaf inside it); a negation `~a` picks leaves only,
those `a` does not cover (neither picks nor lie inside a pick), so `~tw.name("bias")`
never picks the root or a layer; a trailing `/**` is the leaves below a node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .._core.errors import PatternError, SelectorError, call_user
from .._core.matcher import Matcher
from .._core.node import Node, memo_key
from .._core.paths import Path
from .glob import STAR, STAR2, compile_segment, match_one, match_segs

#: How a strict call watches an atom: `wrap(atom, matcher) -> matcher`.
Wrap = Callable[["Selector", Matcher], Matcher]

T = TypeVar("T")


class Selector:
    """Base class of selectors. Compose them with `&`, `|` and `~`.

    A selector decides, for each node of a tree, whether a call acts on it. Selectors
    are immutable, hashable and compare by value; their `repr` reads like the code
    that built them. Wherever a selector is taken, a `str` means
    [`tw.glob`][treewalk.glob], a class means [`tw.of_type`][treewalk.of_type] and
    any other callable `(path, node) -> bool` means [`tw.predicate`][treewalk.predicate].

    **Your own selector**: subclass it as a frozen dataclass and define
    `match(n) -> bool`, where `n` is a [`tw.Node`][treewalk.Node] (`n.path`, `n.node`,
    `n.outer`, `n.parent`, `n.leaf`, `n.segs`). The dataclass gives it equality by value,
    a hash and a repr that reads like code; it composes with `&`, `|`, `~` like any
    other. (A subclass that is not a dataclass may define `fields()` instead, for
    equality by value.) A node it picks is handed over whole, as with every selector;
    `~` of it picks the leaves it does not cover.

    !!! Example

        ```python
        import dataclasses
        import jax.numpy as jnp
        import treewalk as tw

        @dataclasses.dataclass(frozen=True)
        class wider_than(tw.Selector):
            n: int

            def match(self, node):
                x = node.node
                return getattr(x, "ndim", 0) == 2 and x.shape[1] > self.n

        tree = {"a": jnp.ones((2, 8)), "b": jnp.ones((2, 2))}
        assert [tw.path_str(p) for p in tw.paths(tree, wider_than(4))] == ["a"]
        assert wider_than(4) == wider_than(4) and repr(wider_than(4)) == "wider_than(n=4)"
        assert tw.paths(tree, ~wider_than(4)) == [(tw.DictKey("b"),)]
        ```
    """

    __slots__ = ()

    #: The selectors this one is made of (`&`, `|`, `~`, `tw.inside`); atoms have none.
    parts: tuple[Selector, ...] = ()
    #: Is this an atom that strict calls check matches something (`tw.name`, globs, ...)?
    checked = False

    def match(self, n: Node) -> bool:
        """Does this selector pick the node `n`? Define it in a subclass."""
        raise NotImplementedError(f"{type(self).__name__} must define match(n)")

    def fields(self) -> tuple[Any, ...]:
        """The values that define this selector: two selectors of one class with equal
        fields are equal, and hash alike. By default a selector equals only itself."""
        return (id(self),)

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        """The `Matcher` the engine asks during one pass (see `treewalk._core.matcher`): by
        default `match` itself. `wrap` is how a strict call watches atoms."""
        return self.watched(Matcher(self.match), wrap)

    def watched(self, m: Matcher, wrap: Wrap | None) -> Matcher:
        """`m`, wrapped by `wrap` if this selector is an atom strict calls check."""
        return wrap(self, m) if wrap is not None and self.checked else m

    def text(self, parts: list[str], cap: int | None) -> str:
        """This selector's repr, given its parts' (for `fold`); `cap` limits long lists."""
        return object.__repr__(self)

    def __repr__(self) -> str:
        try:
            return describe(self)
        except AttributeError:  # half-built (its __init__ raised)
            return object.__repr__(self)

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
        return type(self) is type(other) and self.fields() == other.fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.fields()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new selector instead")

    def _init(self, **fields: Any) -> None:
        """Set the selector's attributes (once, in `__init__`: selectors are immutable)."""
        for k, v in fields.items():
            object.__setattr__(self, k, v)


def fold(sel: Selector, f: Callable[[Selector, list[T]], T]) -> T:
    """`f(s, [the folds of s's parts])`, children first, over the selector tree `sel`: the
    one walk over selector trees (its atoms, its repr, a message's target)."""
    return f(sel, [fold(p, f) for p in sel.parts])


def describe(sel: Selector, cap: int | None = None) -> str:
    """`sel`'s repr; with `cap`, lists of names, types and parts longer than `cap` are cut
    (`name('a', 'b', … 2,998 more)`)."""
    return fold(sel, lambda s, parts: s.text(parts, cap))


def brief_text(x: Any, limit: int = 40) -> str:
    """`repr(x)`, cut at `limit` characters with an ellipsis."""
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def brief(sel: Any, limit: int = 80) -> str:
    """A selector's repr for messages: never the whole of a huge one (`name('a', 'b', …
    2,998 more)`), cut between parts, never inside a token."""
    if not isinstance(sel, Selector):
        return brief_text(sel)
    text = describe(sel, 3)
    if len(text) > limit:
        text = describe(sel, 1)
    return text if len(text) <= limit + 40 else brief_text(text, limit + 40)


def capped(items: list[str], cap: int | None, sep: str = ", ") -> str:
    """`items` joined, with `… N more` for those past `cap`."""
    if cap is None or len(items) <= cap:
        return sep.join(items)
    return sep.join(items[:cap]) + f"{sep}… {len(items) - cap:,} more"


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


# ------------------------------------------------------------------------------- algebra


def _flatten(cls: type, parts: Iterable[Selector]) -> tuple[Selector, ...]:
    out: list[Selector] = []
    for p in parts:
        out.extend(p.parts if type(p) is cls else (p,))
    return tuple(out)


class And(Selector):
    """Nodes every part picks (`a & b`)."""

    __slots__ = ("parts",)

    def __init__(self, *parts: Selector) -> None:
        self._init(parts=_flatten(And, parts))

    def match(self, n: Node) -> bool:
        return all(p.match(n) for p in self.parts)

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        ms = [p.compile(wrap) for p in self.parts]

        def test(n: Node) -> bool:
            for m in ms:
                if not m(n):
                    return False
            return True

        return Matcher(test, leaves_only=any(m.leaves_only for m in ms))

    def fields(self) -> tuple[Any, ...]:
        return self.parts

    def text(self, parts: list[str], cap: int | None) -> str:
        shown = [f"({t})" if type(p) is Or else t for p, t in zip(self.parts, parts, strict=True)]
        return capped(shown, cap, " & ")


class Or(Selector):
    """Nodes any part picks (`a | b`)."""

    __slots__ = ("parts",)

    def __init__(self, *parts: Selector) -> None:
        self._init(parts=_flatten(Or, parts))

    def match(self, n: Node) -> bool:
        return any(p.match(n) for p in self.parts)

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        ms = [p.compile(wrap) for p in self.parts]

        def test(n: Node) -> bool:
            for m in ms:
                if m(n):
                    return True
            return False

        return Matcher(test, leaves_only=all(m.leaves_only for m in ms))

    def fields(self) -> tuple[Any, ...]:
        return self.parts

    def text(self, parts: list[str], cap: int | None) -> str:
        return capped(parts, cap, " | ")


def above(m: Matcher) -> Callable[[Node | None], bool]:
    """`covered(p)`: does `m` pick `p` or a node above it? Each node's answer is kept on
    the node (for `m`, while the node lives), so each node is asked once, up the chain
    without recursion."""
    token = object()  # this matcher's key in the nodes' memos

    def covered(p: Node | None) -> bool:
        if p is None:
            return False
        memo = p._above
        if memo is not None:  # asked before (a sibling's parent): the common case
            hit = memo.get(token)
            if hit is not None:
                return hit
        chain = []  # the ancestors not asked yet, nearest first
        hit = False
        while p is not None:
            memo = p._above
            if memo is not None and token in memo:
                hit = memo[token]
                break
            chain.append(p)
            p = p.parent
        for q in reversed(chain):
            hit = hit or m(q)
            if q._above is None:
                q._above = {}
            q._above[token] = hit
        return hit

    return covered


class Not(Selector):
    """The leaves the selector does not cover (`~a`): a negation picks leaves only, those
    neither `a` picks nor lie inside a node `a` picks. So `~tw.name("bias")` is every
    leaf but the biases (never the root or a layer), `tw.mask(tree, ~a)` is exactly the
    negation of `tw.mask(tree, a)`, and `{"x": a, "y": ~a}` labels every leaf once.
    `~~a` is the leaves `a` covers (the same mask as `a`'s)."""

    __slots__ = ("selector",)

    def __init__(self, selector: Selector) -> None:
        self._init(selector=selector)

    @property
    def parts(self) -> tuple[Selector, ...]:  # type: ignore[override]
        return (self.selector,)

    def match(self, n: Node) -> bool:
        if not n.leaf:
            return False
        sel, p = self.selector, n
        while p is not None:
            if sel.match(p):
                return False
            p = p.parent
        return True

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        inner = self.selector.compile(wrap)
        covered, test = above(inner), inner.test  # asked at leaves only: `test` itself
        return Matcher(
            lambda n: not (test(n) or covered(n.parent)), leaves_only=True, complement_of=inner
        )

    def fields(self) -> tuple[Any, ...]:
        return (self.selector,)

    def text(self, parts: list[str], cap: int | None) -> str:
        return f"~({parts[0]})" if type(self.selector) in (And, Or) else f"~{parts[0]}"


# ------------------------------------------------------------------ what other values mean


def by_entry(test: Callable[[Node], bool], *, leaves_only: bool = False) -> Matcher:
    """The matcher of a selector whose answer depends on a node's last key entry alone
    (its last segment), remembered per entry: 100,000 leaves have a few dozen distinct
    ones. The engine reads the memo before it makes a `Node`."""
    memo: dict[Any, bool] = {}
    get = memo.get

    def m(n: Node) -> bool:
        k = n._entry  # `memo_key(n)`, inlined: a leaf made by the engine knows its entry
        if k is None:
            k = memo_key(n)
            if k is None:
                return test(n)
        try:
            hit = get(k)
        except TypeError:  # an unhashable key entry
            return test(n)
        if hit is None:
            hit = memo[k] = test(n)
        return hit

    return Matcher(m, by_entry=memo, leaves_only=leaves_only)


class glob(Selector):
    """Select nodes whose path matches a segment-wise glob pattern.

    The pattern is split on `/` into segment patterns and anchored at the root:

    | pattern | matches |
    |---|---|
    | `"**/bias"` | every `bias`, at any depth |
    | `"bias"` | only a top-level `bias` |
    | `"layers/*/weight"` | `weight` one level below `layers` |
    | `"encoder/**"` | every leaf below `encoder` |
    | `"**/layer_[0-3]/*"` | children of `layer_0` … `layer_3` |

    `*` matches exactly one segment (it never crosses a `/`), `**` any number of
    segments including none, `?` and `[...]` one character inside a segment. As in
    `.gitignore` ("all files inside"), a trailing `/**` is what lies *below* a node:
    `"blocks/**"` picks every leaf inside `blocks`, at any depth, never `blocks` itself
    nor the containers between (write `"blocks"` for the node, which `replace` hands
    over whole; `mask` marks the same leaves either way). Integer segments (list
    indices) match their decimal text. For a key that itself holds `/` (Haiku's
    `"mlp/~/linear_0"`), pass a tuple of segment patterns:
    `tw.glob(("mlp/~/linear_0", "w"))`, or use `*`: `"*/w"`.

    The pattern is compiled once, when the selector is built.

    !!! Example

        ```python
        import treewalk as tw

        tree = {"enc": {"layers": [{"w": 1, "bias": 0}, {"w": 2, "bias": 0}]}}
        assert [tw.path_str(p) for p in tw.paths(tree, "**/bias")] == [
            "enc/layers/0/bias", "enc/layers/1/bias"]
        assert tw.paths(tree, "bias") == []
        assert "enc" not in [tw.path_str(p) for p in tw.paths(tree, "enc/**")]
        ```
    """

    __slots__ = ("pattern", "_pat", "_suffix", "_fixed", "_below")
    checked = True

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
        below = len(pat) > 1 and pat[-1] is STAR2
        if below:
            # A trailing `/**` is the leaves below (`.gitignore`'s rule): a segment more.
            pat = (*pat[:-1], STAR, STAR2)
        # The common "**/<literal>": the last segment decides, remembered per key entry.
        suffix = pat[1] if len(pat) == 2 and pat[0] is STAR2 and type(pat[1]) is str else None
        fixed = None if any(p is STAR2 for p in pat) else len(pat)
        self._init(pattern=pattern, _pat=pat, _suffix=suffix, _fixed=fixed, _below=below)

    def match(self, n: Node) -> bool:
        if self._below and not n.leaf:
            return False
        return self._match(n)

    def _match(self, n: Node) -> bool:
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
                if not match_one(p, s):
                    return False
            return True
        return match_segs(self._pat, segs)

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        if self._suffix is not None:
            m = by_entry(self._match)
        else:
            m = Matcher(self._match, leaves_only=self._below)
        return self.watched(m, wrap)

    def fields(self) -> tuple[Any, ...]:
        return (self.pattern,)

    def text(self, parts: list[str], cap: int | None) -> str:
        if cap is not None:
            return f"glob({brief_text(self.pattern)})"
        return f"glob({self.pattern!r})"

    @property
    def target(self) -> str:
        """What a path should look like to match (for a message's closest paths)."""
        p = self.pattern
        return p if isinstance(p, str) else "/".join(map(str, p))


class of_type(Selector):
    """Select nodes that are instances of one of `types`, internal nodes included.

    `tw.of_type(eqx.nn.Linear)` selects whole layers: `replace` hands `fn` the layer,
    and `mask`, `labels` and `show` mark every leaf inside it. A value inside a box also
    matches the box's type: `tw.of_type(nnx.Param)` selects the arrays of NNX `Param`s
    (and not `BatchStat`s).

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
    checked = True

    def __init__(self, *types: type) -> None:
        if not types:
            raise SelectorError(
                "tw.of_type() needs at least one type, e.g. tw.of_type(eqx.nn.Linear)."
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

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        # A memo of this pass's answers by type, which the engine reads outside boxes
        # (inside one, the box's type counts too); a yes in it is a node this picked.
        memo: dict[type, bool] = {}
        is_ = self._is

        def test(n: Node) -> bool:
            t = type(n.node)
            hit = memo.get(t)
            if hit is None:
                hit = memo[t] = is_(n.node)
            if hit:
                return True
            outer = n.outer
            if outer is None:
                return False
            t = type(outer)
            hit = memo.get(t)
            if hit is None:
                hit = memo[t] = is_(outer)
            return hit

        return self.watched(Matcher(test, by_type=memo), wrap)

    def fields(self) -> tuple[Any, ...]:
        return self.types

    def text(self, parts: list[str], cap: int | None) -> str:
        return f"of_type({capped([t.__qualname__ for t in self.types], cap)})"

    @property
    def target(self) -> str:
        return self.types[0].__qualname__


class predicate(Selector):
    """Select nodes for which `fn(path, node)` is true.

    The predicate is asked about every node, internal nodes included (as every
    selector is), so write it for any node: `getattr(x, "ndim", 0) == 2`, not
    `x.ndim == 2`.

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

    def fields(self) -> tuple[Any, ...]:
        return (self.fn,)

    def text(self, parts: list[str], cap: int | None) -> str:
        return f"predicate({getattr(self.fn, '__qualname__', repr(self.fn))})"

"""The other selectors: `name`, `regex`, `inside`, `arrays`, `everything`; and every
selector, re-exported for the rest of the package."""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np
from jax.core import Tracer

from ._errors import PatternError, SelectorError
from ._node import Node
from ._selector import And as And
from ._selector import Matcher, by_last
from ._selector import Not as Not
from ._selector import Or as Or
from ._selector import Selector as Selector
from ._selector import as_selector as as_selector
from ._selector import glob as glob
from ._selector import of_type as of_type
from ._selector import predicate as predicate

# ------------------------------------------------------------------------------- by name


class name(Selector):
    """Select nodes whose last segment equals one of `names`.

    `tw.name("weight", "kernel", "w")` is the weight matrix of a dense layer in Equinox,
    linen/NNX and Haiku alike. An `int` segment also matches its decimal text.

    !!! Example

        ```python
        import treewalk as tw

        tree = {"l1": {"kernel": 1.0, "bias": 0.0}, "l2": {"w": 2.0, "b": 0.0}}
        assert tw.paths(tree, tw.name("kernel", "w")) == tw.paths(tree, "*/kernel") + \\
            tw.paths(tree, "*/w")
        ```
    """

    __slots__ = ("names", "_set")

    def __init__(self, *names: str | int) -> None:
        if not names:
            raise PatternError("tw.name() needs at least one name, e.g. tw.name('bias').")
        bad = [n for n in names if not isinstance(n, str | int)]
        if bad:
            raise SelectorError(f"tw.name takes str or int names; got {bad[0]!r:.60}.")
        self._init(names=tuple(names), _set=frozenset(names) | {str(n) for n in names})

    def match(self, n: Node) -> bool:
        last = n.last
        if last is None:
            return False
        return last in self._set or (type(last) is int and str(last) in self._set)

    def compile(self) -> Matcher:
        return by_last(self.match)

    def _key(self) -> tuple[Any, ...]:
        return self.names

    def __repr__(self) -> str:
        return f"name({', '.join(map(repr, self.names))})"


# ------------------------------------------------------------------------------- regex


class regex(Selector):
    """Select nodes whose `path_str` matches `pattern` entirely (`re.fullmatch`).

    !!! Example

        ```python
        import treewalk as tw

        tree = {"layer_0": {"w": 1}, "layer_1": {"w": 2}, "head": {"w": 3}}
        assert len(tw.paths(tree, tw.regex(r"layer_\\d+/w"))) == 2
        ```
    """

    __slots__ = ("pattern", "_re")

    def __init__(self, pattern: str | re.Pattern[str]) -> None:
        if isinstance(pattern, re.Pattern):
            compiled = pattern
        elif isinstance(pattern, str):
            try:
                compiled = re.compile(pattern)
            except re.error as e:
                raise PatternError(
                    f"regex {pattern!r} does not compile: {e}. Fix the pattern; it is matched "
                    f"with re.fullmatch against path_str(path), e.g. r'layers/\\d+/bias'."
                ) from e
        else:
            raise SelectorError(f"regex takes a str pattern; got {type(pattern).__name__}.")
        self._init(pattern=compiled.pattern, _re=compiled)

    def match(self, n: Node) -> bool:
        return self._re.fullmatch("/".join(map(str, n.segs))) is not None

    def _key(self) -> tuple[Any, ...]:
        return (self.pattern,)

    def __repr__(self) -> str:
        return f"regex({self.pattern!r})"


class inside(Selector):
    """Select nodes strictly below a node that `selector` matches.

    `~tw.inside(eqx.nn.LayerNorm)` keeps norm parameters out of a weight-decay mask.

    !!! Example

        ```python
        import treewalk as tw

        tree = {"norm": {"scale": 1.0}, "dense": {"w": 2.0}}
        assert [tw.path_str(p) for p in tw.paths(tree, tw.inside("norm"))] == ["norm/scale"]
        ```
    """

    __slots__ = ("selector",)

    def __init__(self, selector: Any) -> None:
        self._init(selector=as_selector(selector, what="tw.inside's argument"))

    def match(self, n: Node) -> bool:
        sel = self.selector
        p = n.parent
        while p is not None:
            if sel.match(p):
                return True
            p = p.parent
        return False

    def compile(self) -> Matcher:
        # Whether a node is inside a match is its parent's answer, remembered per parent
        # (the Node is kept with it: an id is only unique while its object lives).
        inner = self.selector.compile()
        memo: dict[int, tuple[Node, bool]] = {}

        def within(p: Node | None) -> bool:
            chain = []
            hit = False
            while p is not None:
                known = memo.get(id(p))
                if known is not None and known[0] is p:
                    hit = known[1]
                    break
                chain.append(p)
                p = p.parent
            for q in reversed(chain):
                hit = hit or inner(q)
                memo[id(q)] = (q, hit)
            return hit

        return lambda n: within(n.parent)

    def _key(self) -> tuple[Any, ...]:
        return (self.selector,)

    def __repr__(self) -> str:
        return f"inside({self.selector!r})"


ARRAY_TYPES: tuple[type, ...] = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)


class _ArrayTypes(dict[type, bool]):
    def __missing__(self, t: type) -> bool:
        # Tracers are `jax.Array`s by `isinstance` only, not by `issubclass`.
        hit = self[t] = issubclass(t, ARRAY_TYPES) or issubclass(t, Tracer)
        return hit


#: `is_array_type[type(x)]`: is `x` an array leaf (jax/numpy array, ShapeDtypeStruct)?
is_array_type = _ArrayTypes()


class _Arrays(Selector):
    """Selects array leaves: `jax.Array` (tracers included), `numpy.ndarray` and
    `jax.ShapeDtypeStruct`; not Python scalars, functions or `None`."""

    __slots__ = ()

    def match(self, n: Node) -> bool:
        return is_array_type[type(n.node)]

    def _key(self) -> tuple[Any, ...]:
        return ()

    def __repr__(self) -> str:
        return "arrays"

    def __reduce__(self) -> str:
        return "arrays"


arrays: Selector = _Arrays()


class _Everything(Selector):
    __slots__ = ()

    def match(self, n: Node) -> bool:
        return True

    def _key(self) -> tuple[Any, ...]:
        return ()

    def __repr__(self) -> str:
        return "everything"


everything: Selector = _Everything()



"""The atoms beyond the three coercion targets (`glob`, `of_type`, `predicate`, in
`algebra`): `name`, `regex`, `inside`, `arrays`, `params`, `everything`."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core.errors import PatternError, SelectorError
from .._core.kinds import ARRAY, KEYLESS, flags_of
from .._core.matcher import Matcher
from .._core.node import Node
from .._frameworks import variable_kind
from .algebra import Selector, Wrap, above, as_selector, brief_text, by_entry, capped

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
    checked = True

    def __init__(self, *names: str | int) -> None:
        if not names:
            raise SelectorError("tw.name() needs at least one name, e.g. tw.name('bias').")
        bad = [n for n in names if not isinstance(n, str | int)]
        if bad:
            raise SelectorError(f"tw.name takes str or int names; got {bad[0]!r:.60}.")
        self._init(names=tuple(names), _set=frozenset(names) | {str(n) for n in names})

    def match(self, n: Node) -> bool:
        last = n.last
        if last is None:
            return False
        return last in self._set or (type(last) is int and str(last) in self._set)

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        return self.watched(by_entry(self.match), wrap)

    def fields(self) -> tuple[Any, ...]:
        return self.names

    def text(self, parts: list[str], cap: int | None) -> str:
        return f"name({capped([repr(n) for n in self.names], cap)})"

    @property
    def target(self) -> str:
        return str(self.names[0])


# ------------------------------------------------------------------------------- regex


class regex(Selector):
    """Select nodes whose `path_str` matches `pattern` entirely (`re.fullmatch`).

    The pattern is a `str` (or a `re.Pattern` compiled from one; bytes patterns are
    refused when the selector is built). A pattern is code: it runs on every path, and
    a pattern that backtracks catastrophically (`(a+)+$`) is the caller's to avoid.

    !!! Example

        ```python
        import treewalk as tw

        tree = {"layer_0": {"w": 1}, "layer_1": {"w": 2}, "head": {"w": 3}}
        assert len(tw.paths(tree, tw.regex(r"layer_\\d+/w"))) == 2
        ```
    """

    __slots__ = ("pattern", "_re")
    checked = True

    def __init__(self, pattern: str | re.Pattern[str]) -> None:
        if isinstance(pattern, re.Pattern):
            if not isinstance(pattern.pattern, str):
                raise PatternError(
                    f"regex {brief_text(pattern.pattern)}: a bytes pattern cannot match "
                    f"paths, which are str: write re.compile(r'...') with a str pattern."
                )
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
            raise SelectorError(
                f"regex takes a str pattern (or a compiled str pattern); got "
                f"{type(pattern).__name__}."
            )
        self._init(pattern=compiled.pattern, _re=compiled)

    def match(self, n: Node) -> bool:
        return self._re.fullmatch("/".join(map(str, n.segs))) is not None

    def fields(self) -> tuple[Any, ...]:
        return (self.pattern,)

    def text(self, parts: list[str], cap: int | None) -> str:
        if cap is not None:
            return f"regex({brief_text(self.pattern)})"
        return f"regex({self.pattern!r})"

    @property
    def target(self) -> str:
        return self.pattern


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
    checked = True

    def __init__(self, selector: Any) -> None:
        self._init(selector=as_selector(selector, what="tw.inside's argument"))

    @property
    def parts(self) -> tuple[Selector, ...]:  # type: ignore[override]
        return (self.selector,)

    def match(self, n: Node) -> bool:
        sel = self.selector
        p = n.parent
        while p is not None:
            if sel.match(p):
                return True
            p = p.parent
        return False

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        # The inner selector is this atom's business: strictness checks `inside(...)` whole.
        covered = above(self.selector.compile())
        return self.watched(Matcher(lambda n: covered(n.parent)), wrap)

    def fields(self) -> tuple[Any, ...]:
        return (self.selector,)

    def text(self, parts: list[str], cap: int | None) -> str:
        return f"inside({parts[0]})"


class _ByDtype(dict[Any, bool]):
    """`test[dtype]`, remembered per dtype (a model has a handful)."""

    def __init__(self, of: Any) -> None:
        super().__init__()
        self.of = of

    def __missing__(self, dtype: Any) -> bool:
        hit = self[dtype] = bool(jnp.issubdtype(dtype, self.of))
        return hit


_key_dtype = _ByDtype(jax.dtypes.prng_key)
_inexact_dtype = _ByDtype(np.inexact)


def _is_key(x: Any) -> bool:
    if type(x) is np.ndarray:
        return False  # numpy has no key dtypes
    dtype = getattr(x, "dtype", None)
    return dtype is not None and _key_dtype[dtype]


def _inexact(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and _inexact_dtype[dtype]


class Arrays(Selector):
    """The type of `tw.arrays`: array leaves (see its documentation)."""

    __slots__ = ()

    def match(self, n: Node) -> bool:
        x = n.node
        f = flags_of(x)
        return bool(f & ARRAY) and (bool(f & KEYLESS) or not _is_key(x))

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        memo: dict[type, bool] = {}  # for the types that decide: the engine reads it

        def m(n: Node) -> bool:
            x = n.node
            f = flags_of(x)
            if not f & ARRAY:
                memo[type(x)] = False
                return False
            if f & KEYLESS:
                memo[type(x)] = True
                return True
            return not _is_key(x)

        return Matcher(m, by_type=memo, leaves_only=True)

    def fields(self) -> tuple[Any, ...]:
        return ()

    def text(self, parts: list[str], cap: int | None) -> str:
        return "arrays"

    def __reduce__(self) -> str:
        return "arrays"


arrays: Selector = Arrays()
"""The selector `tw.arrays`: array leaves.

`jax.Array` (tracers included), `numpy.ndarray` and `jax.ShapeDtypeStruct`; not
Python scalars, functions, `None`, nor typed PRNG key arrays (dtype
`jax.dtypes.prng_key`: an NNX `Dropout`'s key is state, not an array to fill). It
does select integer arrays and NNX `BatchStat`s and RNG counters: to select what an
optimiser trains, use [`tw.params`][treewalk.params].

!!! Example

    ```python
    import jax
    import jax.numpy as jnp
    import treewalk as tw

    tree = {"w": jnp.ones(2), "step": 3, "key": jax.random.key(0)}
    assert [tw.path_str(p) for p in tw.paths(tree, tw.arrays)] == ["w"]
    ```
"""


class Params(Selector):
    """The type of `tw.params`: the arrays an optimiser trains (see its documentation)."""

    __slots__ = ()

    def match(self, n: Node) -> bool:
        x = n.node
        if not flags_of(x) & ARRAY or not _inexact(x):
            return False
        outer = n.outer
        if outer is not None:
            kind = variable_kind(outer)
            if kind is not None:
                return kind == "param"
        return True

    def compile(self, wrap: Wrap | None = None) -> Matcher:
        return Matcher(self.match, leaves_only=True)

    def fields(self) -> tuple[Any, ...]:
        return ()

    def text(self, parts: list[str], cap: int | None) -> str:
        return "params"

    def __reduce__(self) -> str:
        return "params"


params: Selector = Params()
"""The selector `tw.params`: the arrays an optimiser trains.

On Flax NNX, the floating-point values of `nnx.Param` variables (not `BatchStat`,
RNG keys and counters, nor other `Variable`s). Elsewhere (Equinox, linen, Haiku,
penzai, dicts), every inexact (float or complex) array leaf, as
`eqx.is_inexact_array`: never integer arrays nor typed PRNG key arrays.

!!! Example

    ```python
    from flax import nnx
    import treewalk as tw

    net = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
                         nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
    assert [tw.path_str(p) for p in tw.paths(net, tw.params)] == [
        "layers/0/bias", "layers/0/kernel", "layers/1/bias", "layers/1/scale"]
    ```
"""


class Everything(Selector):
    """The type of `tw.everything`: every node (see its documentation)."""

    __slots__ = ()

    def match(self, n: Node) -> bool:
        return True

    def fields(self) -> tuple[Any, ...]:
        return ()

    def text(self, parts: list[str], cap: int | None) -> str:
        return "everything"

    def __reduce__(self) -> str:
        return "everything"


everything: Selector = Everything()
"""The selector `tw.everything`: every node, internal nodes included (`None` only
where a call includes `None`). `~tw.everything` selects nothing.

!!! Example

    ```python
    import treewalk as tw

    assert tw.mask({"a": 1, "b": [2]}, tw.everything) == {"a": True, "b": [True]}
    ```
"""

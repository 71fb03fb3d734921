"""The zoo: a fixed tree of each kind that a transform gets wrong most often (lists and
dicts of distinct arrays, a tie, a shared NNX variable, boxes, `float16`, numpy, `None`,
static and custom nodes; models of each framework), which every check with its default
trees tries first, before the random ones: hypothesis' runs differ a lot in what they
draw, and the zoo makes sure each run meets every kind at least once.

Each zoo tree is built afresh for each call of the law (a transform under test may
change its input in place)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from ._kinds import linen_partitioned, nnx_node, nnx_state, nnx_variables, penzai_parameter
from ._models import Spec, available, build
from ._nodes import Keyed, Pair, Static, Unkeyed, eqx_node
from ._params import params_trees
from ._strategies import pytrees


class Zoo(NamedTuple):
    """One tree of the zoo: its name and how to build it; `number`, its place in the zoo
    (hypothesis reports the failing explicit example of the shortest repr first: that
    is the zoo's first)."""

    name: str
    make: Callable[[], Any]
    number: int = 0

    def __repr__(self) -> str:
        return f"zoo[{self.number}]"


def _numbered(zoo: list[Zoo]) -> list[Zoo]:
    return [z._replace(number=i) for i, z in enumerate(zoo)]


#: What a check draws by default: its strategy and its zoo.
Default = Callable[[], tuple[st.SearchStrategy[Any], list[Zoo]]]


def _arrays(*specs: tuple[tuple[int, ...], str]) -> list[Any]:
    rng = np.random.default_rng(0)
    return [jnp.asarray((rng.normal(size=s) * 3).astype(d)) for s, d in specs]


def _plain() -> list[Zoo]:
    def lists_and_dicts() -> Any:
        a, b, c, d = _arrays(
            ((2, 3), "float32"), ((3,), "float32"), ((3, 2), "float32"), ((2,), "float32")
        )
        return {"layers": [a, b], "head": {"w": c, "b": d}}

    def tie() -> Any:
        t, b = _arrays(((3, 2), "float32"), ((2,), "float32"))
        return {"embed": t, "head": t, "bias": b}

    def dtypes() -> Any:
        h, bf, i = _arrays(((2, 2), "float16"), ((3,), "bfloat16"), ((2,), "float32"))
        ints = jnp.asarray(np.arange(3, dtype=np.int32))
        return [h, bf, ints, jnp.asarray([True, False]), np.asarray(i)]

    def nodes() -> Any:
        (x,) = _arrays(((2,), "float32"))
        return Pair(None, Keyed(Static("s"), Unkeyed(x, 3, jax.nn.relu, "name")))

    def shapes() -> Any:
        scalar, empty = _arrays(((), "float32"), ((0,), "float32"))
        return (scalar, empty, [], {})

    return [
        Zoo("lists and dicts of distinct arrays", lists_and_dicts),
        Zoo("tie (one array at two paths)", tie),
        Zoo("float16, bfloat16, int, bool and numpy leaves", dtypes),
        Zoo("None, static and custom nodes", nodes),
        Zoo("0-d, empty arrays and empty containers", shapes),
    ]


def _frameworks(penzai: bool) -> list[Zoo]:
    out = []
    eqx_cls, nnx_cls, variables = eqx_node(), nnx_node(), nnx_variables()
    if eqx_cls is not None:

        def equinox() -> Any:
            a, b = _arrays(((2,), "float32"), ((1, 2), "float32"))
            return eqx_cls(a, [b, "s"], "x")

        out.append(Zoo("Equinox module", equinox))
    if nnx_cls is not None:
        param, stat = variables

        def nnx_module() -> Any:
            a, b, c = _arrays(((2,), "float32"), ((3,), "float32"), ((2, 2), "float32"))
            return nnx_cls(param(a), nnx_cls(stat(b), [c, None]))

        def shared() -> Any:
            a, b, c = _arrays(((3,), "float32"), ((1,), "float32"), ((2,), "float32"))
            v = param(a)
            return nnx_cls(nnx_cls(v, b), nnx_cls(v, c))

        def state() -> Any:
            a, b = _arrays(((2,), "float32"), ((2, 3), "float32"))
            return nnx_state(nnx_cls(param(a), stat(b)))

        out += [
            Zoo("NNX module", nnx_module),
            Zoo("NNX variable shared by two modules", shared),
            Zoo("nnx.State", state),
        ]
    partitioned = linen_partitioned()
    parameter = penzai_parameter() if penzai else None
    if partitioned is not None or parameter is not None:

        def boxes() -> Any:
            a, b = _arrays(((2, 2), "float32"), ((3,), "float32"))
            out: dict[str, Any] = {}
            if partitioned is not None:
                out["p"] = partitioned(a, names=("data", None))
            if parameter is not None:
                out["q"] = parameter(value=b, label="w")
            return out

        out.append(Zoo("linen and penzai boxes", boxes))
    return out


def pytrees_zoo(*, penzai: bool = True) -> list[Zoo]:
    """The zoo of `pytrees()`'s kinds (those of installed frameworks)."""
    return _numbered(_plain() + _frameworks(penzai))


def params_zoo() -> list[Zoo]:
    """A model of each installed framework: two blocks of attention and an MLP, widths
    that are not square; Equinox without biases (`None`s), NNX with a shared block, a
    stem with batch norm and dropout, linen with `Partitioned` kernels, Haiku in
    `bfloat16`."""
    base = Spec(
        framework="",
        width=4,
        hidden=5,
        heads=2,
        blocks=2,
        vocab=7,
        head=True,
        bias=True,
        norm="layer",
        attention=True,
        stem=False,
        dropout=False,
        dtype="float32",
        shared=False,
        partitioned=False,
    )
    specs = {
        "equinox": dataclasses.replace(base, framework="equinox", bias=False, norm="rms"),
        "nnx": dataclasses.replace(base, framework="nnx", shared=True, stem=True, dropout=True),
        "linen": dataclasses.replace(base, framework="linen", partitioned=True, stem=True),
        "haiku": dataclasses.replace(base, framework="haiku", dtype="bfloat16"),
    }
    return _numbered(
        [
            Zoo(f"{name} model", lambda spec=spec: build(spec, 0))
            for name, spec in specs.items()
            if available(name) and (name != "linen" or linen_partitioned() is not None)
        ]
    )


def pytrees_default() -> tuple[st.SearchStrategy[Any], list[Zoo]]:
    return pytrees(), pytrees_zoo()


def traceable_default() -> tuple[st.SearchStrategy[Any], list[Zoo]]:
    """Trees JAX can trace: no penzai `Parameter`s (leaves JAX does not look into)."""
    return pytrees(penzai=False), pytrees_zoo(penzai=False)


def params_default() -> tuple[st.SearchStrategy[Any], list[Zoo]]:
    return params_trees(), params_zoo()

"""`params_trees()`: a strategy for trees shaped like a model's parameters, in each
framework's own form (Equinox and NNX modules of their layers, linen and Haiku dicts),
for the selectors users write (`"blocks/0/**"`, `"**/kernel"`, `tw.name("bias")`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from .._core.errors import ArgumentError
from ._kinds import installed
from ._models import FRAMEWORKS, Spec, available, build, prepare
from ._strategies import pick

_DTYPES = ("float32", "bfloat16", "float16")


def _frameworks(frameworks: str | Sequence[str] | None) -> tuple[str, ...]:
    if frameworks is None:
        return tuple(f for f in FRAMEWORKS if available(f))
    names = (frameworks,) if isinstance(frameworks, str) else tuple(frameworks)
    unknown = [f for f in names if f not in FRAMEWORKS]
    if unknown or not names:
        raise ArgumentError(
            f"params_trees(frameworks=...) takes some of {', '.join(map(repr, FRAMEWORKS))}; "
            f"got {frameworks!r}."
        )
    missing = [f for f in names if not available(f)]
    if missing:
        pkgs = " ".join(sorted({FRAMEWORKS[f] or "" for f in missing}))
        raise ArgumentError(
            f"params_trees(frameworks={names!r}) builds {missing[0]!r} models with the "
            f"framework's own layers, and it is not installed: pip install {pkgs}, or "
            f"leave {missing[0]!r} out."
        )
    return names


@st.composite
def _models(
    draw: st.DrawFn,
    frameworks: tuple[str, ...],
    max_blocks: int,
    dtypes: tuple[str, ...],
    ties: bool,
) -> Any:
    framework = draw(st.sampled_from(frameworks))
    heads = pick(draw, [(3, 2), (2, 1)])
    blocks = min(max_blocks, pick(draw, [(5, 2), (3, 1), (2, 3)]))
    spec = Spec(
        framework=framework,
        width=heads * pick(draw, [(3, 2), (2, 3), (1, 1)]),
        hidden=pick(draw, [(3, 5), (2, 3), (1, 8)]),
        heads=heads,
        blocks=blocks,
        vocab=pick(draw, [(3, 7), (1, None), (1, 5)]),
        head=pick(draw, [(3, True), (1, False)]),
        bias=pick(draw, [(3, True), (2, False)]),
        norm=pick(draw, [(3, "layer"), (2, "rms")]),
        attention=pick(draw, [(4, True), (1, False)]),
        stem=framework != "haiku" and pick(draw, [(4, False), (1, True)]),
        dropout=framework == "nnx" and pick(draw, [(3, False), (1, True)]),
        dtype=pick(draw, [(5 if d == "float32" else 2, d) for d in dtypes]),
        shared=ties
        and blocks > 1
        and framework in ("equinox", "nnx")
        and pick(draw, [(9, False), (1, True)]),
        partitioned=framework == "linen"
        and installed("flax")
        and pick(draw, [(2, False), (1, True)]),
    )
    return build(spec, draw(st.integers(0, 2**16)))


def params_trees(
    *,
    frameworks: str | Sequence[str] | None = None,
    max_blocks: int = 3,
    dtypes: Sequence[str] = _DTYPES,
    ties: bool = True,
) -> st.SearchStrategy[Any]:
    """A strategy for trees shaped like a model's parameters: a stack of blocks
    (`blocks/k/...`) with attention, an MLP and norms, an embedding, a head, in the form
    each framework holds them, so the selectors you write for your models select
    something. Values are drawn (not an initialiser's zeros and ones), so a change to
    any leaf shows.

    - `"equinox"`: an Equinox module of `eqx.nn` layers: `blocks/0/attn/query_proj/weight`
      (`MultiheadAttention`), `blocks/0/mlp/layers/1/bias` (`MLP`, with its activation
      functions as leaves), `norm/weight` (`LayerNorm` or `RMSNorm`), `embed/weight`,
      `head/weight` `(out, in)`; a bias left out is `None`; a `Conv2d` `stem`.
    - `"nnx"`: a Flax NNX module of `nnx` layers, its arrays in `nnx.Param`s:
      `blocks/0/attn/query/kernel` `(in, heads, head_dim)`, `blocks/0/mlp/fc1/kernel`
      `(in, out)`, `norm/scale`, `embed/embedding`; a `Conv` `stem` with a `BatchNorm`
      (`bn/mean`, `bn/var`: `BatchStat`s, not parameters); a `Dropout` with its RNG key
      and counter; a bias left out is `None`.
    - `"linen"`: the dict `Module.init` returns, `{"params": ..., "batch_stats": ...}`:
      `params/blocks_0/attn/query/kernel`, `params/blocks_0/mlp/Dense_0/kernel`, kernels
      in `nn.Partitioned` boxes one time in three; a bias left out is absent.
    - `"haiku"`: the dict `hk.transform(f).init` returns: `model/~/block_0/~/mlp/~/linear_0`
      (one segment) holding `w` `(in, out)` and `b`; layer norms' `scale`, `offset`.

    Widths, hidden sizes and vocabularies differ (a square weight passes every layout
    check), blocks are one to three, the dtype is `float32` mostly and `bfloat16` or
    `float16` otherwise; in one Equinox or NNX model in ten every block is one shared
    module (its parameters tied, as in ALBERT).

    **Arguments:**

    - `frameworks`: which forms to draw (one name, or several); every one whose
      framework is installed by default (linen's and Haiku's dicts need none).
    - `max_blocks`: at most this many blocks.
    - `dtypes`: the parameters' dtypes to draw from.
    - `ties`: include models whose blocks are one shared module.

    **Returns:**

    A hypothesis strategy.

    **Raises:**

    `tw.ArgumentError` (a `TypeError`) for an unknown framework, or one not installed.

    !!! Example

        ```python
        from hypothesis import given, settings
        import treewalk as tw
        from treewalk.testing import params_trees

        @settings(max_examples=20, deadline=None)
        @given(params_trees(frameworks=["equinox", "nnx"]))
        def test_zeroing_biases_leaves_the_weights(model):
            out = tw.replace(model, "**/bias", tw.zeros, strict=False)
            assert not tw.diff(model, out, ~tw.name("bias"), strict=False)

        test_zeroing_biases_leaves_the_weights()
        ```
    """
    if max_blocks < 1:
        raise ArgumentError(f"params_trees(max_blocks={max_blocks}) needs 1 block at least.")
    bad = [d for d in dtypes if d not in _DTYPES]
    if bad or not dtypes:
        raise ArgumentError(
            f"params_trees(dtypes=...) takes some of {', '.join(_DTYPES)}; got {list(dtypes)}."
        )
    names = _frameworks(frameworks)
    prepare(names)
    return _models(names, max_blocks, tuple(dtypes), ties)

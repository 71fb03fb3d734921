"""Weight layouts and fans: which axes of a weight are in/out, and a leaf's fans read in
its layer (a bias gets its layer's weight's fans)."""

from __future__ import annotations

import math
from typing import Any

from .._core.errors import ArgumentError, InitError
from .._core.node import Node
from .._core.paths import show_path
from .._frameworks import BIAS_NAMES, WEIGHT_NAMES, layout_of, unboxed


def check_layout(layout: str) -> str:
    """Validate a layout string: one `o`, one `i`, at most one `k` (any number of axes)."""
    ok = (
        isinstance(layout, str)
        and sorted(layout.replace("k", "")) == ["i", "o"]
        and layout.count("k") <= 1
        and set(layout) <= {"o", "i", "k"}
    )
    if not ok:
        raise ArgumentError(
            f"layout={layout!r} is not a weight layout. A layout names the role of each axis: "
            f"'o' output features, 'i' input features, 'k' the receptive-field axes (any "
            f"number, or none). E.g. 'oi' (Equinox Linear, PyTorch), 'io' or 'kio' (linen/NNX "
            f"and Haiku Dense/Conv kernels), 'oik' (Equinox Conv)."
        )
    return layout


def axes_of(layout: str, ndim: int) -> tuple[int, int, tuple[int, ...]] | None:
    """`(out axis, in axis, receptive-field axes)` of an `ndim`-D weight, or `None` when
    `layout` does not fit `ndim`."""
    if "k" not in layout:
        if ndim != len(layout):
            return None
        return layout.index("o"), layout.index("i"), ()
    nk = ndim - 2
    if nk < 0:
        return None
    roles: list[str] = []
    for c in layout:
        roles.extend(["k"] * nk if c == "k" else [c])
    ks = tuple(a for a, c in enumerate(roles) if c == "k")
    return roles.index("o"), roles.index("i"), ks


def weight_fans(shape: tuple[int, ...], layout: str) -> tuple[int, int] | None:
    """`(fan_in, fan_out)` of a weight of `shape` in `layout`, or `None` if it does not fit."""
    axes = axes_of(layout, len(shape))
    if axes is None:
        return None
    o, i, ks = axes
    receptive = math.prod(shape[a] for a in ks)
    return shape[i] * receptive, shape[o] * receptive


def _child(layer: Any, name: str) -> Any:
    """`layer.<name>` or `layer[name]`, unboxed; `None` when absent."""
    if isinstance(layer, dict):
        value = layer.get(name)
    else:
        try:
            value = getattr(layer, name, None)
        except Exception:
            return None
    return unboxed(value)


def _layer_name(n: Node) -> str:
    parent = n.parent
    return "the root" if parent is None else type(parent.node).__name__


def _how(what: str) -> str:
    return (
        f"{what}: pass the weight layout (`layout='oi'` for (out, in) as in Equinox/PyTorch, "
        f"'kio' for (*kernel, in, out) as in linen/NNX/Haiku, 'oik' for (out, in, *kernel)) "
        f"or the fans (`fan_in=`, `fan_out=`) to the initialiser, or select only the layers' "
        f"weights and biases (e.g. `tw.name('weight', 'bias')`)."
    )


def find_fans(n: Node, layout: str | None, name: str) -> tuple[int, int]:
    """`(fan_in, fan_out)` of the weight `n` is, or of the weight of the layer whose bias
    `n` is. `name` (the initialiser's repr) starts the error messages."""
    node = n.node
    shape = tuple(node.shape)
    last = n.last
    layer = None if n.parent is None else n.parent.node
    if last in BIAS_NAMES and layer is not None:
        for wname in WEIGHT_NAMES:
            weight = _child(layer, wname)
            if weight is None or weight is node or not hasattr(weight, "shape"):
                continue
            wlayout = layout or layout_of(layer, wname)
            if wlayout is None:
                raise InitError(
                    f"{name} at {show_path(n.path)}: the bias's layer "
                    f"({type(layer).__name__}) has a weight {wname!r} of shape "
                    f"{tuple(weight.shape)} whose layout is unknown. " + _how("Say how to read it")
                )
            fans = weight_fans(tuple(weight.shape), wlayout)
            if fans is None:
                raise InitError(
                    f"{name} at {show_path(n.path)}: layout {wlayout!r} does not fit the "
                    f"{len(weight.shape)}-D weight {wname!r} of shape {tuple(weight.shape)} of "
                    f"the layer ({type(layer).__name__}). " + _how("Fix the layout")
                )
            return fans
    if len(shape) <= 1:
        kind = "scalar" if not shape else "1-D leaf"
        raise InitError(
            f"{name} at {show_path(n.path)}: a {kind} of shape {shape} that is not the bias "
            f"of a layer with a weight (its parent is {_layer_name(n)}; a norm scale or bias "
            f"looks like this) has no fan-in. Fan-based initialisers do not guess one: "
            f"leave it out of the selector (e.g. `tw.arrays & ~tw.inside(eqx.nn.LayerNorm)`), "
            f"give it `tw.ones`/`tw.zeros`, or pass `fan_in=` explicitly."
        )
    wlayout = layout
    if wlayout is None and last in WEIGHT_NAMES:
        wlayout = layout_of(layer, str(last))
    if wlayout is None:
        raise InitError(
            f"{name} at {show_path(n.path)}: cannot tell the layout of this {len(shape)}-D "
            f"leaf of shape {shape} (named {last!r} in {_layer_name(n)}). "
            + _how("Say which axes are in/out")
        )
    fans = weight_fans(shape, wlayout)
    if fans is None:
        raise InitError(
            f"{name} at {show_path(n.path)}: layout {wlayout!r} does not fit the "
            f"{len(shape)}-D leaf of shape {shape}. " + _how("Fix the layout")
        )
    return fans


def output_axis(n: Node, layout: str | None) -> int | None:
    """The output axis of the weight `n` is, from `layout` or its layer's type; `None` when
    neither says it."""
    shape = tuple(n.node.shape)
    layer = None if n.parent is None else n.parent.node
    if layout is None and n.last in WEIGHT_NAMES:
        layout = layout_of(layer, str(n.last))
    axes = None if layout is None else axes_of(layout, len(shape))
    return None if axes is None else axes[0]

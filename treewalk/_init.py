"""Layout-aware initialisers: fans taken from the layer, not from the leaf."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import ArgumentError, InitError
from ._frameworks import BIAS_NAMES, WEIGHT_NAMES, layout_of, registry, unbox
from ._helpers import ArrayFn
from ._path import Path, show_path
from ._selectors import Node

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["truncated_normal", "normal", "uniform"]

# std of a standard normal truncated to [-2, 2]
_TRUNC_STD = 0.87962566103423978


# ----------------------------------------------------------------------------- layouts


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
    reg = registry.refresh()
    for _ in range(4):
        if reg.boxes and isinstance(value, reg.boxes):
            value = unbox(value, reg.pytree_boxes)[1]
        else:
            break
    return value


@dataclasses.dataclass(frozen=True)
class Fans:
    """What an initialiser learnt about one leaf: its fans and where they came from."""

    fan_in: int | None
    fan_out: int | None
    source: str


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


def find_fans(n: Node, layout: str | None, name: str) -> Fans:
    """The fans of the weight `n` is, or of the weight of the layer whose bias `n` is."""
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
            return Fans(*fans, f"{wname} of {type(layer).__name__}")
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
    return Fans(*fans, "own shape")


# ----------------------------------------------------------------------------- the base


def _check_leaf(n: Node, name: str) -> tuple[tuple[int, ...], Any]:
    node = n.node
    shape, dtype = getattr(node, "shape", None), getattr(node, "dtype", None)
    if shape is None or dtype is None:
        raise InitError(
            f"{name} needs an array leaf at {show_path(n.path)}, got {type(node).__name__}. "
            f"Select array leaves only (e.g. `sel & tw.arrays`)."
        )
    dtype = np.dtype(dtype) if not hasattr(dtype, "kind") else dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        kind = "complex" if jnp.issubdtype(dtype, jnp.complexfloating) else "non-float"
        raise InitError(
            f"{name} draws real floating-point values, but the leaf at {show_path(n.path)} "
            f"has {kind} dtype {dtype} (shape {tuple(shape)}). Leave it out of the selector "
            f"(e.g. `sel & tw.predicate(lambda p, x: jnp.issubdtype(x.dtype, jnp.floating))`)"
            f" or cast it first."
        )
    return tuple(shape), dtype


class Initializer(ArrayFn):
    """Base of `tw.init`: an `ArrayFn` whose draw may depend on the leaf's place in the tree.

    Subclasses define `params(n) -> hashable` (what the draw needs beyond shape, dtype and
    key; the fans for fan-based initialisers) and `sample(key, shape, dtype, params)`.
    Leaves with equal `(shape, dtype, params)` are drawn in one vectorised call.
    """

    needs_key = True
    fan_based = False

    def params(self, n: Node) -> Any:
        return ()

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        raise NotImplementedError

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return self.sample(key, shape, dtype, ())

    def prepare(self, n: Node) -> tuple[tuple[int, ...], Any, Any]:
        shape, dtype = _check_leaf(n, repr(self))
        if math.prod(shape) == 0 and shape:
            return shape, dtype, None  # empty: nothing to draw
        return shape, dtype, self.params(n)

    def tw_signature(self, n: Node) -> Any:
        return self.prepare(n)

    def tw_call(self, n: Node, key: Any) -> Any:
        shape, dtype, params = self.prepare(n)
        if params is None:
            return jnp.zeros(shape, dtype)
        return _Bound(self, params)(n.path, n.node, key)

    def __call__(self, path: Path, node: Any, key: Any) -> Any:
        return self.tw_call(Node(path, node, None, None), key)

    def tw_batched(self, nodes: Sequence[Any], keys: Any, signature: Any) -> jax.Array:
        shape, dtype, params = signature
        if params is None:
            return jnp.zeros((len(nodes), *shape), dtype)
        if keys is None:
            raise ArgumentError(
                f"{self!r} draws random values and needs a key: pass key=jax.random.key(0) "
                f"to tw.replace (path {show_path(nodes[0].path)})."
            )
        return jax.vmap(lambda k: self.sample(k, shape, dtype, params))(keys)


@dataclasses.dataclass(frozen=True, eq=True)
class _Bound(ArrayFn):
    """An initialiser with its per-leaf parameters fixed: a plain `ArrayFn` (hashable, so
    sharded draws compile once per distinct parameters)."""

    init: Initializer
    params: Any
    needs_key = True

    def draw(self, key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        return self.init.sample(key, shape, dtype, self.params)

    def __repr__(self) -> str:
        return repr(self.init)


def _fmt(**kw: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())


# ----------------------------------------------------------------------------- fan-based


class variance_scaling(Initializer):
    """Variance scaling with fans read from the layer: `Var = scale / n`.

    `n` is the fan-in, the fan-out or their mean (`mode`). For a weight the fans come from
    its shape read in its layer's layout; for a bias they are **its layer's weight's**
    fans (a bias's own length is the layer's fan-out, which is what Keras wrongly uses).
    The same per-leaf draws as `jax.nn.initializers.variance_scaling` on a `(*k, in, out)`
    kernel with the same key.

    Layouts known without help: Equinox `Linear` `(out, in)` and `Conv`/`ConvTranspose`
    `(out, in, *k)`; linen/NNX `kernel` and Haiku `w`: `(*k, in, out)`. A 1-D leaf that is
    not the bias of such a layer (a norm scale), a scalar, or a weight of an unknown layout
    is a `tw.InitError` that says how to fix the call. Integer, boolean and complex leaves
    are an `InitError`; zero-size leaves are returned as empty arrays (nothing to draw).

    **Arguments:**

    - `scale`: the variance numerator (1 for LeCun/Glorot, 2 for He).
    - `mode`: `"fan_in"`, `"fan_out"` or `"fan_avg"`.
    - `distribution`: `"truncated_normal"` (at two standard deviations, rescaled so the
      variance is exact), `"normal"` or `"uniform"`.
    - `layout`: the weight layout to use instead of the one the layer's type gives, e.g.
      `"oi"` `(out, in)`, `"kio"` `(*k, in, out)`, `"oik"` `(out, in, *k)`.
    - `fan_in`, `fan_out`: fixed fans, used instead of computed ones.

    **Returns:**

    A `fn` for `tw.replace` (needs `key=`).

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import treewalk as tw

        mlp = eqx.nn.MLP(8, 1, 512, 1, key=jax.random.key(0))
        init = tw.init.variance_scaling(2.0, "fan_in", "normal")
        mlp = tw.replace(mlp, tw.arrays, init, key=jax.random.key(1))
        # the bias of the first layer has the variance of its fan-in 8, not of its length 512
        assert 0.3 < mlp.layers[0].bias.std() < 0.7
        ```
    """

    fan_based = True

    def __init__(
        self,
        scale: float = 1.0,
        mode: Mode = "fan_in",
        distribution: Distribution = "truncated_normal",
        *,
        layout: str | None = None,
        fan_in: int | None = None,
        fan_out: int | None = None,
    ) -> None:
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ArgumentError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg'; got {mode!r}.")
        if distribution not in ("truncated_normal", "normal", "uniform"):
            raise ArgumentError(
                f"distribution must be 'truncated_normal', 'normal' or 'uniform'; got "
                f"{distribution!r}."
            )
        if not scale > 0:
            raise ArgumentError(f"scale must be positive; got {scale!r}.")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution
        self.layout = None if layout is None else check_layout(layout)
        self.fan_in, self.fan_out = fan_in, fan_out
        self.label = f"tw.init.variance_scaling({_fmt(scale=scale, mode=mode)}, {distribution!r})"

    def fans(self, n: Node) -> tuple[int, int]:
        fi, fo = self.fan_in, self.fan_out
        need_in = self.mode in ("fan_in", "fan_avg") and fi is None
        need_out = self.mode in ("fan_out", "fan_avg") and fo is None
        if need_in or need_out:
            found = find_fans(n, self.layout, repr(self))
            fi = found.fan_in if fi is None else fi
            fo = found.fan_out if fo is None else fo
        return (fi or 0), (fo or 0)

    def params(self, n: Node) -> Any:
        fi, fo = self.fans(n)
        denom = {"fan_in": fi, "fan_out": fo, "fan_avg": (fi + fo) / 2}[self.mode]
        if denom <= 0:
            raise InitError(
                f"{self!r} at {show_path(n.path)}: the {self.mode} is 0 (fans in/out: "
                f"{fi}/{fo}); a zero-size layer has no variance to scale. Pass fan_in=/fan_out=."
            )
        return ("vs", fi, fo, self.scale / denom)

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        variance = params[3]
        if self.distribution == "truncated_normal":
            std = math.sqrt(variance) / _TRUNC_STD
            return jax.random.truncated_normal(key, -2, 2, shape, dtype) * jnp.asarray(std, dtype)
        if self.distribution == "normal":
            return jax.random.normal(key, shape, dtype) * jnp.asarray(math.sqrt(variance), dtype)
        lim = jnp.asarray(math.sqrt(3 * variance), dtype)
        return jax.random.uniform(key, shape, dtype, -1) * lim

    def __repr__(self) -> str:
        return self.label


def _named(label: str, init: variance_scaling) -> variance_scaling:
    init.label = label
    return init


def _kw(layout: str | None, fan_in: int | None, fan_out: int | None) -> str:
    kw = {k: v for k, v in (("layout", layout), ("fan_in", fan_in), ("fan_out", fan_out)) if v}
    return _fmt(**kw)


def lecun_normal(
    *, layout: str | None = None, fan_in: int | None = None, fan_out: int | None = None
) -> variance_scaling:
    """LeCun normal: truncated normal with variance `1 / fan_in`, fans from the layer.

    `variance_scaling(1.0, "fan_in", "truncated_normal", ...)`; the arguments are those of
    [`tw.init.variance_scaling`][treewalk.init.variance_scaling]. Unlike Flax's
    `lecun_normal` as a `bias_init` (which crashes on a 1-D shape), a bias gets its layer's
    fan-in.

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        params = {"dense": {"kernel": jnp.zeros((256, 4)), "bias": jnp.zeros(4)}}
        params = tw.replace(params, tw.arrays, tw.init.lecun_normal(), key=jax.random.key(0))
        assert abs(params["dense"]["kernel"].std() - 1 / 16) < 0.01  # 1 / sqrt(256)
        ```
    """
    init = variance_scaling(1.0, "fan_in", "truncated_normal", **_d(layout, fan_in, fan_out))
    return _named(f"tw.init.lecun_normal({_kw(layout, fan_in, fan_out)})", init)


def _d(layout: str | None, fan_in: int | None, fan_out: int | None) -> dict[str, Any]:
    return {"layout": layout, "fan_in": fan_in, "fan_out": fan_out}


def lecun_uniform(
    *, layout: str | None = None, fan_in: int | None = None, fan_out: int | None = None
) -> variance_scaling:
    """LeCun uniform: `U(-√(3/fan_in), √(3/fan_in))`, fans from the layer.

    `variance_scaling(1.0, "fan_in", "uniform", ...)`.

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        w = tw.replace(jnp.zeros((300, 3)), tw.arrays, tw.init.lecun_uniform(layout="io"),
                       key=jax.random.key(0))
        assert abs(w).max() <= 0.1  # sqrt(3 / 300)
        ```
    """
    init = variance_scaling(1.0, "fan_in", "uniform", **_d(layout, fan_in, fan_out))
    return _named(f"tw.init.lecun_uniform({_kw(layout, fan_in, fan_out)})", init)


def he_normal(
    *, layout: str | None = None, fan_in: int | None = None, fan_out: int | None = None
) -> variance_scaling:
    """He (Kaiming) normal: truncated normal with variance `2 / fan_in`, fans from the layer.

    `variance_scaling(2.0, "fan_in", "truncated_normal", ...)`, as
    `jax.nn.initializers.he_normal`.

    !!! Example

        ```python
        import jax
        import treewalk as tw
        from flax import nnx

        model = nnx.Linear(512, 8, rngs=nnx.Rngs(0))
        model = tw.replace(model, "kernel", tw.init.he_normal(), key=jax.random.key(0))
        assert abs(model.kernel[...].std() - (2 / 512) ** 0.5) < 0.01
        ```
    """
    init = variance_scaling(2.0, "fan_in", "truncated_normal", **_d(layout, fan_in, fan_out))
    return _named(f"tw.init.he_normal({_kw(layout, fan_in, fan_out)})", init)


def he_uniform(
    *, layout: str | None = None, fan_in: int | None = None, fan_out: int | None = None
) -> variance_scaling:
    """He (Kaiming) uniform: `U(-√(6/fan_in), √(6/fan_in))`, fans from the layer.

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import treewalk as tw

        conv = eqx.nn.Conv2d(6, 4, 3, key=jax.random.key(0))  # weight (4, 6, 3, 3)
        conv = tw.replace(conv, "weight", tw.init.he_uniform(), key=jax.random.key(1))
        assert abs(conv.weight).max() <= (6 / (6 * 9)) ** 0.5
        ```
    """
    init = variance_scaling(2.0, "fan_in", "uniform", **_d(layout, fan_in, fan_out))
    return _named(f"tw.init.he_uniform({_kw(layout, fan_in, fan_out)})", init)


def glorot_normal(
    *, layout: str | None = None, fan_in: int | None = None, fan_out: int | None = None
) -> variance_scaling:
    """Glorot (Xavier) normal: truncated normal with variance `2 / (fan_in + fan_out)`.

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        tree = {"mlp/~/linear_0": {"w": jnp.zeros((100, 300)), "b": jnp.zeros(300)}}
        tree = tw.replace(tree, tw.arrays, tw.init.glorot_normal(), key=jax.random.key(0))
        assert abs(tree["mlp/~/linear_0"]["w"].std() - (2 / 400) ** 0.5) < 0.005
        ```
    """
    init = variance_scaling(1.0, "fan_avg", "truncated_normal", **_d(layout, fan_in, fan_out))
    return _named(f"tw.init.glorot_normal({_kw(layout, fan_in, fan_out)})", init)


def glorot_uniform(
    *, layout: str | None = None, fan_in: int | None = None, fan_out: int | None = None
) -> variance_scaling:
    """Glorot (Xavier) uniform: `U(-√(6/(fan_in+fan_out)), √(6/(fan_in+fan_out)))`.

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        tree = {"kernel": jnp.zeros((10, 14))}
        tree = tw.replace(tree, "kernel", tw.init.glorot_uniform(), key=jax.random.key(0))
        assert abs(tree["kernel"]).max() <= 0.5  # sqrt(6 / 24)
        ```
    """
    init = variance_scaling(1.0, "fan_avg", "uniform", **_d(layout, fan_in, fan_out))
    return _named(f"tw.init.glorot_uniform({_kw(layout, fan_in, fan_out)})", init)


class torch_default(Initializer):
    """PyTorch's default for `Linear`/`Conv`: `U(-1/√fan_in, 1/√fan_in)` for weight and bias.

    PyTorch draws the weight with `kaiming_uniform_(a=√5)`, whose bound
    `√(6 / ((1 + a²) fan_in))` is `1/√fan_in`, and the bias from `U(-1/√fan_in, 1/√fan_in)`
    with the *weight's* fan-in. Here a bias's fan-in is likewise its layer's (Equinox
    `Linear`/`Conv` use the same bounds). This is what Keras gets wrong for biases
    (keras#20873): it uses the bias's length, the layer's fan-out.

    **Arguments:**

    - `layout`, `fan_in`: as for [`tw.init.variance_scaling`][treewalk.init.variance_scaling].

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import treewalk as tw

        mlp = eqx.nn.MLP(4, 1, 1000, 1, key=jax.random.key(0))
        mlp = tw.replace(mlp, tw.arrays, tw.init.torch_default(), key=jax.random.key(1))
        assert abs(mlp.layers[0].bias).max() <= 0.5   # 1 / sqrt(4), not 1 / sqrt(1000)
        assert abs(mlp.layers[1].weight).max() <= 1000 ** -0.5
        ```
    """

    fan_based = True

    def __init__(self, *, layout: str | None = None, fan_in: int | None = None) -> None:
        self.layout = None if layout is None else check_layout(layout)
        self.fan_in = fan_in

    def params(self, n: Node) -> Any:
        fi = self.fan_in
        if fi is None:
            fi = find_fans(n, self.layout, repr(self)).fan_in
        if not fi:
            raise InitError(
                f"{self!r} at {show_path(n.path)}: the layer's fan-in is 0. Pass fan_in=."
            )
        return ("torch", fi)

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        lim = jnp.asarray(1 / math.sqrt(params[1]), dtype)
        return jax.random.uniform(key, shape, dtype, -1) * lim

    def __repr__(self) -> str:
        return f"tw.init.torch_default({_kw(self.layout, self.fan_in, None)})"


# ----------------------------------------------------------------------------- shape-only


class normal(Initializer):
    """`N(0, stddev²)`, as `jax.nn.initializers.normal(stddev)` (same values, same key).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        emb = {"embedding": jnp.zeros((1000, 16))}
        emb = tw.replace(emb, tw.arrays, tw.init.normal(0.02), key=jax.random.key(0))
        assert abs(emb["embedding"].std() - 0.02) < 0.002
        ```
    """

    def __init__(self, stddev: float = 1e-2) -> None:
        self.stddev = stddev

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        return jax.random.normal(key, shape, dtype) * jnp.asarray(self.stddev, dtype)

    def __repr__(self) -> str:
        return f"tw.init.normal({self.stddev!r})"


class uniform(Initializer):
    """`U[0, scale)`, as `jax.nn.initializers.uniform(scale)` (same values, same key).

    For a symmetric interval, use `uniform(2 * a)` and subtract `a`, or
    [`tw.init.torch_default`][treewalk.init.torch_default] / `lecun_uniform`.

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        x = tw.replace(jnp.zeros(100), tw.arrays, tw.init.uniform(0.5), key=jax.random.key(0))
        assert (0 <= x).all() and (x < 0.5).all()
        ```
    """

    def __init__(self, scale: float = 1e-2) -> None:
        self.scale = scale

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        return jax.random.uniform(key, shape, dtype) * jnp.asarray(self.scale, dtype)

    def __repr__(self) -> str:
        return f"tw.init.uniform({self.scale!r})"


class truncated_normal(Initializer):
    """Normal with standard deviation `stddev`, truncated to `[lower, upper]` standard
    deviations, as `jax.nn.initializers.truncated_normal` (same values, same key).

    !!! Example

        ```python
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        x = tw.replace(jnp.zeros(1000), tw.arrays, tw.init.truncated_normal(0.1),
                       key=jax.random.key(0))
        assert abs(x).max() <= 0.2
        ```
    """

    def __init__(self, stddev: float = 1e-2, lower: float = -2.0, upper: float = 2.0) -> None:
        if not lower < upper:
            raise ArgumentError(f"lower must be below upper; got {lower!r}, {upper!r}.")
        self.stddev, self.lower, self.upper = stddev, lower, upper

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        x = jax.random.truncated_normal(key, self.lower, self.upper, shape, dtype)
        return x * jnp.asarray(self.stddev, dtype)

    def __repr__(self) -> str:
        return f"tw.init.truncated_normal({self.stddev!r}, {self.lower!r}, {self.upper!r})"


class orthogonal(Initializer):
    """A (semi-)orthogonal matrix times `scale`, the output axis read from the layer.

    The weight is viewed as a matrix with the output axis as columns and every other axis
    flattened into rows, as `jax.nn.initializers.orthogonal(scale, column_axis)`. The
    output axis comes from the layer's layout (axis 0 for Equinox's `(out, in)`, the last
    for linen/NNX/Haiku kernels), from `layout=`, or from `column_axis=`; otherwise it is
    an `InitError`. 1-D leaves and scalars are an `InitError` (no orthogonal vector).

    !!! Example

        ```python
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import treewalk as tw

        lin = eqx.nn.Linear(16, 4, key=jax.random.key(0))  # weight (4, 16)
        lin = tw.replace(lin, "weight", tw.init.orthogonal(), key=jax.random.key(1))
        assert jnp.allclose(lin.weight @ lin.weight.T, jnp.eye(4), atol=1e-5)
        ```
    """

    def __init__(
        self, scale: float = 1.0, *, layout: str | None = None, column_axis: int | None = None
    ) -> None:
        self.scale = scale
        self.layout = None if layout is None else check_layout(layout)
        self.column_axis = column_axis

    def params(self, n: Node) -> Any:
        shape = tuple(n.node.shape)
        if len(shape) < 2:
            raise InitError(
                f"{self!r} at {show_path(n.path)}: a leaf of shape {shape} cannot be "
                f"orthogonal (it needs at least 2 axes). Select weights only, e.g. "
                f"`tw.name('weight', 'kernel', 'w')`."
            )
        if self.column_axis is not None:
            return ("orth", self.column_axis % len(shape))
        layout = self.layout
        layer = None if n.parent is None else n.parent.node
        if layout is None and n.last in WEIGHT_NAMES:
            layout = layout_of(layer, str(n.last))
        axes = None if layout is None else axes_of(layout, len(shape))
        if axes is None:
            raise InitError(
                f"{self!r} at {show_path(n.path)}: cannot tell the output axis of the leaf of "
                f"shape {shape}. Pass `column_axis=` (e.g. -1 for (in, out), 0 for (out, in)) "
                f"or `layout=`."
            )
        return ("orth", axes[0])

    def sample(self, key: Any, shape: tuple[int, ...], dtype: Any, params: Any) -> jax.Array:
        return jax.nn.initializers.orthogonal(self.scale, params[1])(key, shape, dtype)

    def __repr__(self) -> str:
        return f"tw.init.orthogonal({self.scale!r})"

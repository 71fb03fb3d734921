"""treewalk on real Flax linen param dicts, including `Partitioned` boxes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from frameworks import LinenMLP, linen_params, linen_partitioned_params

import treewalk as tw

lecun = tw.initializer(jax.nn.initializers.lecun_normal())
X = jnp.ones((1, 3))


def strs(tree, sel):
    return [tw.path_str(p) for p in tw.paths(tree, sel)]


def test_dense_params_paths():
    params = nn.Dense(4).init(jax.random.key(0), X)
    assert strs(params, tw.everything) == ["", "params", "params/bias", "params/kernel"]
    [(path, node)] = tw.select(params, "params/kernel")
    assert tw.path_segments(path) == ("params", "kernel")
    assert node is params["params"]["kernel"]


def test_partitioned_value_is_hidden():
    params = linen_partitioned_params()
    box = params["params"]["kernel"]
    assert isinstance(box, nn.Partitioned) and box.names == (None, "model")
    assert strs(params, tw.arrays) == ["params/bias", "params/kernel"]
    [(path, node)] = tw.select(params, "params/kernel")
    assert node is box.value
    assert tw.path_str(path) == "params/kernel"


def test_walks_identity_and_order():
    params = linen_params()
    pre, post = [], []
    for walk, log in ((tw.prewalk, pre), (tw.postwalk, post)):
        out = walk(lambda p, n, log=log: log.append(tw.path_str(p)) or n, params)
        assert jax.tree.structure(out) == jax.tree.structure(params)
        pairs = zip(jax.tree.leaves(out), jax.tree.leaves(params), strict=True)
        assert all(a is b for a, b in pairs)
    assert pre[:3] == ["", "params", "params/dense_0"]
    assert post[-1] == "" and post.index("params/dense_0/kernel") < post.index("params/dense_0")
    assert sorted(pre) == sorted(post)


def test_selectors_on_params():
    params = linen_params()
    assert strs(params, tw.name("weight", "kernel", "w")) == [
        "params/dense_0/kernel",
        "params/dense_1/kernel",
    ]
    no_norm = tw.arrays & ~tw.glob("params/norm/**")
    assert "params/norm/scale" not in strs(params, no_norm)
    assert len(strs(params, no_norm)) == 4
    assert strs(params, tw.regex(r"params/dense_\d/bias")) == [
        "params/dense_0/bias",
        "params/dense_1/bias",
    ]


def test_zero_biases_and_apply():
    params = linen_params()
    out = tw.replace(params, "**/bias", tw.zeros)
    assert (out["params"]["dense_0"]["bias"] == 0).all()
    assert out["params"]["dense_0"]["kernel"] is params["params"]["dense_0"]["kernel"]
    assert (out["params"]["norm"]["bias"] == 0).all()
    assert LinenMLP().apply(out, X).shape == (1, 2)


def test_reinit_kernels_deterministic():
    params = linen_params()
    a = tw.replace(params, "**/kernel", lecun, key=jax.random.key(1))
    b = tw.replace(params, "**/kernel", lecun, key=jax.random.key(1))
    k0 = params["params"]["dense_0"]["kernel"]
    ka = a["params"]["dense_0"]["kernel"]
    np.testing.assert_array_equal(ka, b["params"]["dense_0"]["kernel"])
    assert not np.allclose(ka, k0)
    assert a["params"]["dense_1"]["bias"] is params["params"]["dense_1"]["bias"]


def test_partitioned_box_survives_replace():
    params = linen_partitioned_params()
    out = tw.replace(params, "**/kernel", lecun, key=jax.random.key(3))
    box = out["params"]["kernel"]
    assert isinstance(box, nn.Partitioned)
    assert box.names == (None, "model") and box.mesh is None
    assert box.value.shape == (3, 4)
    assert not np.allclose(box.value, params["params"]["kernel"].value)
    unboxed = nn.meta.unbox(out)
    assert nn.Dense(4).apply(unboxed, X).shape == (1, 4)


def test_logically_partitioned_box_survives_replace():
    init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
    params = nn.Dense(4, kernel_init=init).init(jax.random.key(0), X)
    out = tw.replace(params, "params/kernel", tw.zeros)
    box = out["params"]["kernel"]
    assert type(box) is nn.LogicallyPartitioned
    assert box.names == ("embed", "mlp")
    assert (box.value == 0).all()


def test_replace_under_jit():
    params = linen_params()
    reinit = jax.jit(lambda p, k: tw.replace(p, "**/kernel", lecun, key=k))
    fast = reinit(params, jax.random.key(2))
    eager = tw.replace(params, "**/kernel", lecun, key=jax.random.key(2))
    np.testing.assert_allclose(
        fast["params"]["dense_1"]["kernel"], eager["params"]["dense_1"]["kernel"], rtol=1e-6
    )


def test_mask_has_the_params_structure():
    params = linen_partitioned_params()
    mask = tw.mask(params, "**/kernel")
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert sorted(jax.tree.leaves(mask)) == [False, True]


def test_abstract_params_materialised():
    abstract = jax.eval_shape(linen_partitioned_params)
    box = abstract["params"]["kernel"]
    assert isinstance(box, nn.Partitioned) and isinstance(box.value, jax.ShapeDtypeStruct)
    out = tw.replace(abstract, "**/kernel", lecun, key=jax.random.key(0))
    out = tw.replace(out, "**/bias", tw.zeros)
    kernel = out["params"]["kernel"]
    assert isinstance(kernel, nn.Partitioned) and kernel.names == (None, "model")
    assert isinstance(kernel.value, jax.Array) and kernel.value.shape == (3, 4)
    assert nn.Dense(4).apply(nn.meta.unbox(out), X).shape == (1, 4)

"""Issue 13: a selection that decides training is never silently empty; NNX masks and
labels work with `nnx.Optimizer` as written; `tw.params`; errors for first mistakes."""

from __future__ import annotations

import re
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import treewalk as tw

PARAMS = {
    "dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
    "head": {"kernel": jnp.ones((3, 1)), "bias": jnp.zeros(1)},
}


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.l1 = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.l2 = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.norm(self.l1(x)))


DECAY = ~(tw.name("bias") | tw.inside(nnx.LayerNorm))


def leaves(tree):
    """`{path: numpy array}` of a module's or state's parameters."""
    return {tw.path_str(p): np.asarray(x) for p, x in tw.select(tree, tw.params)}


# ------------------------------------------------------------------- strict by default


def test_a_typo_under_not_is_an_error_not_decay_everywhere():
    with pytest.raises(tw.NoMatchError, match=r"name\('biass'\).*Closest paths: .*bias"):
        tw.mask(PARAMS, ~tw.name("biass"))
    assert tw.mask(PARAMS, ~tw.name("biass"), strict=False)["dense"]["bias"] is True


def test_every_atom_of_an_or_must_match():
    with pytest.raises(tw.NoMatchError, match=r"name\('kernal'\) \(in the selector"):
        tw.mask(PARAMS, tw.name("kernel") | tw.name("kernal"))
    with pytest.raises(tw.NoMatchError, match=r"name\('kernal'\)"):
        tw.replace(PARAMS, tw.name("kernel") | tw.name("kernal"), tw.zeros)
    # One atom with alternatives is alive when any of them matches.
    assert tw.mask(PARAMS, tw.name("weight", "kernel", "w"))["head"]["kernel"] is True


def test_labels_with_a_typo_freeze_nothing_is_an_error():
    with pytest.raises(tw.NoMatchError, match=r"label 'frozen'.*glob\('dens/\*\*'\)"):
        tw.labels(PARAMS, {"frozen": "dens/**"}, default="train")
    lab = tw.labels(PARAMS, {"frozen": "dens/**"}, default="train", strict=False)
    assert lab["dense"]["kernel"] == "train"


def test_nnx_filter_with_the_model_is_strict():
    net = Net(nnx.Rngs(0))
    with pytest.raises(tw.NoMatchError, match=r"glob\('haed/\*\*'\)"):
        tw.nnx_filter("haed/**", net)
    assert tw.nnx_filter("haed/**", net, strict=False)(("l1", "kernel"), None) is False


def test_short_circuits_give_no_false_alarm():
    # `name("kernel")` is only asked where `name("bias")` said yes, and `name("x")`
    # never (everything said yes first): the dead-looking atoms are verified alone.
    m = tw.mask(PARAMS, tw.name("bias") & tw.name("kernel"))
    assert not any(jax.tree.leaves(m))
    assert all(jax.tree.leaves(tw.mask(PARAMS, tw.everything | tw.name("kernel"))))
    # replace does not go into a selected layer: `name("bias")` is verified there.
    out = tw.replace(PARAMS, tw.glob("dense") | tw.name("bias"), lambda p, x, k: x)
    assert out["head"]["bias"] is PARAMS["head"]["bias"]


def test_a_module_type_on_a_state_says_what_to_do():
    state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
    with pytest.raises(tw.NoMatchError, match=r"holds no layers.*Build the mask from the model"):
        tw.mask(state, DECAY)
    # The function form gets the bare arrays optax is handed: the same error, at init.
    net = Net(nnx.Rngs(0))
    tx = optax.adamw(1e-2, mask=lambda p: tw.mask(p, DECAY))
    with pytest.raises(tw.NoMatchError, match="holds no layers"):
        nnx.Optimizer(net, tx, wrt=nnx.Param)


def test_looking_stays_non_strict():
    assert tw.select(PARAMS, ~tw.name("biass")) != []
    assert tw.paths(PARAMS, "nothing") == []
    assert tw.show(PARAMS, "nothing").selected == 0


# ------------------------------------------------------------ NNX + optax, as written


def decay_steps(net, mask, steps=3, lr=0.1, wd=0.5):
    """`steps` updates with zero gradients: adamw's Adam part is then 0, so exactly the
    masked parameters move, each by the factor (1 - lr * wd) per step."""
    opt = nnx.Optimizer(net, optax.adamw(lr, weight_decay=wd, mask=mask), wrt=nnx.Param)
    zeros = jax.tree.map(jnp.zeros_like, nnx.state(net, nnx.Param))
    for _ in range(steps):
        opt.update(net, zeros)
    return (1 - lr * wd) ** steps


@pytest.mark.parametrize(
    "make_mask",
    [
        lambda net: tw.mask(net, DECAY),  # from the module: inside() sees the LayerNorm
        # A State's mask has the State's structure; wrt= gives the optimiser's pure form.
        lambda net: tw.mask(nnx.state(net, nnx.Param), ~tw.name("bias", "scale"), wrt=nnx.Param),
        lambda net: lambda p: tw.mask(p, ~tw.name("bias", "scale")),  # a mask function
    ],
    ids=["module", "state", "function"],
)
def test_weight_decay_mask_decays_exactly_the_kernels(make_mask):
    net = Net(nnx.Rngs(0))
    before = leaves(net)
    factor = decay_steps(net, make_mask(net))
    after = leaves(net)
    for path, x in before.items():
        want = x * factor if path.endswith("kernel") else x
        np.testing.assert_allclose(after[path], want, rtol=1e-6, err_msg=path)
    assert sum(p.endswith("kernel") for p in before) == 2


def test_plain_optax_over_an_nnx_state_takes_the_states_mask():
    # optax.masked maps the mask over the params: a State's mask has the State's boxes.
    net = Net(nnx.Rngs(0))
    params = nnx.state(net, nnx.Param)
    tx = optax.adamw(0.1, weight_decay=0.5, mask=tw.mask(params, ~tw.name("bias", "scale")))
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    moved = {tw.path_str(p): bool((x != 0).any()) for p, x in tw.select(updates, tw.arrays)}
    assert moved == {
        "l1/bias": False,
        "l1/kernel": True,
        "l2/bias": False,
        "l2/kernel": True,
        "norm/bias": False,
        "norm/scale": False,
    }


def test_the_mask_of_nnx_trees_is_pure():
    net = Net(nnx.Rngs(0))
    m = tw.mask(net, DECAY)
    assert isinstance(m, nnx.State)
    assert jax.tree.structure(m) == jax.tree.structure(nnx.as_pure(nnx.state(net, nnx.Param)))
    assert m["l1"]["kernel"] is True and m["norm"]["scale"] is False


def test_freeze_with_multi_transform_in_training():
    net = Net(nnx.Rngs(0))
    labels = tw.labels(net, {"frozen": "l1/**"}, default="train")
    tx = optax.multi_transform({"train": optax.adam(1e-2), "frozen": optax.set_to_zero()}, labels)
    opt = nnx.Optimizer(net, tx, wrt=nnx.Param)
    before = leaves(net)
    x, y = jnp.ones((8, 3)), jnp.zeros((8, 2))

    @nnx.jit
    def step(net, opt):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y - 1.0) ** 2))(net)
        opt.update(net, grads)

    for _ in range(3):
        step(net, opt)
    after = leaves(net)
    for path, x0 in before.items():
        if path.startswith("l1/"):
            np.testing.assert_array_equal(after[path], x0, err_msg=path)
        else:
            assert not np.allclose(after[path], x0), path


def test_labels_of_a_module_need_none_for_its_batch_statistics():
    net = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
    lab = tw.labels(net, {"decay": "**/kernel", "plain": tw.name("bias", "scale")})
    assert jax.tree.leaves(lab) == ["plain", "decay", "plain", "plain"]
    with pytest.raises(tw.LabelError, match="layers/1/scale"):
        tw.labels(net, {"decay": "**/kernel", "plain": "**/bias"})


# ----------------------------------------------------------------- tw.params, arrays


def test_params_and_arrays_leave_rng_state_alone():
    drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    arrays = [tw.path_str(p) for p in tw.paths(drop, tw.arrays)]
    assert arrays == ["rngs/count"]  # the counter; the typed key never
    assert tw.paths(drop, tw.params) == []
    assert tw.show(drop).total == 0
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    assert [tw.path_str(p) for p in tw.paths(bn, tw.params)] == ["bias", "scale"]
    assert tw.show(bn).total == 6  # scale and bias, not the batch statistics


def test_params_elsewhere_are_inexact_arrays():
    tree = {
        "w": jnp.ones(2),
        "c": jnp.ones(2, jnp.complex64),
        "step": jnp.int32(3),
        "n": np.arange(3),
        "key": jax.random.key(0),
    }
    assert sorted(tw.path_str(p) for p in tw.paths(tree, tw.params)) == ["c", "w"]
    mlp = eqx.nn.MLP(2, 2, 4, 1, key=jax.random.key(0))
    got = [x for _, x in tw.select(mlp, tw.params)]
    assert len(got) == len(jax.tree.leaves(eqx.filter(mlp, eqx.is_inexact_array)))


# ------------------------------------------------------------- first mistakes


def test_an_unwrapped_initializer_says_tw_initializer():
    init = jax.nn.initializers.lecun_normal()
    with pytest.raises(tw.ArgumentError, match=r"tw\.initializer") as info:
        tw.replace(PARAMS, "**/kernel", init, key=jax.random.key(0))
    assert "[[1." not in str(info.value)  # never the array


def test_a_two_argument_fn_says_the_signature():
    with pytest.raises(tw.ArgumentError, match=r"fn\(path, node, key\)"):
        tw.replace(PARAMS, "**/bias", lambda path, node: node)


@pytest.mark.parametrize("call", [tw.replace, tw.select])
def test_is_leaf_not_callable_is_the_same_error(call):
    args = (PARAMS, "**/bias", tw.zeros) if call is tw.replace else (PARAMS, "**/bias")
    with pytest.raises(tw.ArgumentError, match=r"is_leaf=lambda node: \.\.\."):
        call(*args, is_leaf=3)


def test_a_bytes_regex_is_refused_when_built():
    with pytest.raises(tw.PatternError, match="bytes"):
        tw.regex(re.compile(b"a"))


def test_messages_never_hold_a_whole_selector():
    sel = tw.name(*[f"n{i}" for i in range(3000)])
    with pytest.raises(tw.NoMatchError) as info:
        tw.replace(PARAMS, sel, tw.zeros)
    msg = str(info.value)
    assert "… 2,997 more)" in msg and "n2999" not in msg and len(msg) < 1000


def test_the_errors_page_says_what_each_error_subclasses():
    page = (Path(__file__).parent.parent / "docs/api/errors.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", page, flags=re.M))
    for name in [n for n in tw.__all__ if n.endswith("Error")]:
        bases = ", ".join(f"`{b.__name__}`" for b in getattr(tw, name).__bases__)
        assert rows[name].strip() == bases, name


def _layers(kind: str):
    """40 layers of {kernel or weight, bias}, as a dict, an Equinox model or an NNX one."""
    if kind == "dict":
        return {f"layer_{i}": {"kernel": jnp.ones(2), "bias": jnp.zeros(2)} for i in range(40)}
    if kind == "eqx":
        keys = jax.random.split(jax.random.key(0), 40)
        return [eqx.nn.Linear(2, 2, key=k) for k in keys]

    class Stack(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.layers = nnx.List([nnx.Linear(2, 2, rngs=rngs) for _ in range(40)])

    return Stack(nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["dict", "eqx", "nnx"])
@pytest.mark.parametrize("dead", [tw.name("biass"), tw.glob("**/biass"), tw.regex(r"\d+/biass")])
def test_the_miss_message_counts_every_node_and_shows_the_closest(kind, dead):
    # A survey whose atoms answer by the last key skips the nodes it has seen enough of
    # (the engine answers them from its memo); the count must not lose them.
    tree = _layers(kind)
    nodes = len([p for p in tw.paths(tree, tw.everything) if p])
    assert nodes >= 120
    with pytest.raises(tw.NoMatchError) as info:
        tw.replace(tree, dead, tw.zeros)
    msg = str(info.value)
    assert f"({nodes} paths)" in msg, msg
    assert re.search(r"Closest paths: '[^']*\d+/bias'", msg), msg

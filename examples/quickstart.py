"""Zero every bias and re-key every weight of an Equinox MLP, a Flax NNX model
and a dict."""

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx

import treewalk as tw

WEIGHTS = tw.name("weight", "kernel", "w")  # Equinox, linen/NNX, Haiku
init = tw.initializer(jax.nn.initializers.lecun_normal())


def report(title, before, after):
    print(f"\n== {title}")
    for (path, old), (_, new) in zip(
        tw.select(before, tw.arrays), tw.select(after, tw.arrays), strict=True
    ):
        changed = "changed" if not jnp.array_equal(old, new) else "kept"
        print(
            f"  {tw.path_str(path):<24} {str(old.shape):<10} {changed:<8} "
            f"mean {float(old.mean()):+.3f} -> {float(new.mean()):+.3f}"
        )


def reinit(tree, key):
    tree = tw.replace(tree, "**/bias", tw.zeros)
    return tw.replace(tree, WEIGHTS, init, key=key)


key = jax.random.key(0)

mlp = eqx.nn.MLP(
    in_size=4, out_size=2, width_size=8, depth=2, key=jax.random.key(1)
)
report("Equinox MLP", mlp, reinit(mlp, key))


class TwoLayer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(4, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


model = TwoLayer(nnx.Rngs(1))
# NNX biases start at zero: make the change visible.
model = tw.replace(model, "**/bias", tw.ones)
new_model = reinit(model, key)
report("Flax NNX model", model, new_model)
assert isinstance(new_model.l1.kernel, nnx.Param)  # the Param boxes survive

params = {
    "encoder": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)},
    "head": {"kernel": jnp.ones((8, 2)), "bias": jnp.ones(2)},
}
report("plain dict", params, reinit(params, key))

print("\n== tw.show: look before you change")
print(tw.show(mlp, "**/bias"))

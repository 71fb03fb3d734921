"""Layout-aware initialisers for `tw.replace`, and data-driven empirical init.

Every initialiser here is a `fn` for [`tw.replace`][treewalk.replace]. Fan-based ones
read a weight's fans in its layer's layout and give a bias its layer's fan-in. Each works
on JAX and numpy leaves (a numpy leaf gets a numpy array of its own dtype).

- Fan-based: `variance_scaling`, `lecun_normal`, `lecun_uniform`, `he_normal`,
  `he_uniform`, `glorot_normal`, `glorot_uniform`, `torch_default`.
- Shape-only: `normal`, `uniform`, `truncated_normal`, `orthogonal`, `zeros`, `ones`.
- Data-driven: `empirical`, `layer_stats` (and their `LayerStats`).
- `Initializer`: the base class, to write your own.
"""

from .._fns import ones as ones
from .._fns import zeros as zeros
from ._base import Initializer as Initializer
from ._empirical import empirical as empirical
from ._presets import glorot_normal as glorot_normal
from ._presets import glorot_uniform as glorot_uniform
from ._presets import he_normal as he_normal
from ._presets import he_uniform as he_uniform
from ._presets import lecun_normal as lecun_normal
from ._presets import lecun_uniform as lecun_uniform
from ._scaling import torch_default as torch_default
from ._scaling import variance_scaling as variance_scaling
from ._simple import normal as normal
from ._simple import orthogonal as orthogonal
from ._simple import truncated_normal as truncated_normal
from ._simple import uniform as uniform
from ._stats import LayerStats as LayerStats
from ._stats import layer_stats as layer_stats

__all__ = [
    "Initializer",
    "LayerStats",
    "empirical",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "layer_stats",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "torch_default",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "zeros",
]

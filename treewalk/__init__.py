"""treewalk: select nodes of any JAX pytree by path, name, type or glob, and replace them
with `fn(path, node, key)`."""

from importlib import metadata as _metadata

from jax.tree_util import DictKey as DictKey
from jax.tree_util import FlattenedIndexKey as FlattenedIndexKey
from jax.tree_util import GetAttrKey as GetAttrKey
from jax.tree_util import SequenceKey as SequenceKey

from . import init as init
from ._checkpoint.export import export as export
from ._checkpoint.load import load as load
from ._checkpoint.load import load_plan as load_plan
from ._checkpoint.plan import LoadPlan as LoadPlan
from ._core.errors import ArgumentError as ArgumentError
from ._core.errors import CallbackError as CallbackError
from ._core.errors import InitError as InitError
from ._core.errors import LabelError as LabelError
from ._core.errors import LoadError as LoadError
from ._core.errors import LoadWarning as LoadWarning
from ._core.errors import NoMatchError as NoMatchError
from ._core.errors import PatternError as PatternError
from ._core.errors import PRNGKeyError as PRNGKeyError
from ._core.errors import ReplacementError as ReplacementError
from ._core.errors import SelectorError as SelectorError
from ._core.errors import StructureError as StructureError
from ._core.errors import TreewalkError as TreewalkError
from ._core.keys import key_for_path as key_for_path
from ._core.node import Node as Node
from ._core.paths import BoxKey as BoxKey
from ._core.paths import path_segments as path_segments
from ._core.paths import path_str as path_str
from ._core.types import IsLeaf as IsLeaf
from ._core.types import PyTree as PyTree
from ._core.types import ReplaceFn as ReplaceFn
from ._fns import constant as constant
from ._fns import initializer as initializer
from ._fns import ones as ones
from ._fns import zeros as zeros
from ._materialize import materialize as materialize
from ._ops.diff import Diff as Diff
from ._ops.diff import diff as diff
from ._ops.nnx import nnx_filter as nnx_filter
from ._ops.query import labels as labels
from ._ops.query import mask as mask
from ._ops.query import paths as paths
from ._ops.query import select as select
from ._ops.query import where as where
from ._ops.replace import replace as replace
from ._ops.show import Table as Table
from ._ops.show import show as show
from ._ops.walk import postwalk as postwalk
from ._ops.walk import prewalk as prewalk
from ._select.algebra import Selector as Selector
from ._select.algebra import as_selector as as_selector
from ._select.algebra import glob as glob
from ._select.algebra import of_type as of_type
from ._select.algebra import predicate as predicate
from ._select.atoms import arrays as arrays
from ._select.atoms import everything as everything
from ._select.atoms import inside as inside
from ._select.atoms import name as name
from ._select.atoms import params as params
from ._select.atoms import regex as regex

__version__ = _metadata.version("jax-treewalk")

__all__ = [
    "ArgumentError",
    "BoxKey",
    "CallbackError",
    "DictKey",
    "Diff",
    "FlattenedIndexKey",
    "GetAttrKey",
    "IsLeaf",
    "InitError",
    "LabelError",
    "LoadError",
    "LoadWarning",
    "LoadPlan",
    "NoMatchError",
    "Node",
    "PRNGKeyError",
    "PatternError",
    "PyTree",
    "ReplaceFn",
    "ReplacementError",
    "Selector",
    "SelectorError",
    "SequenceKey",
    "StructureError",
    "Table",
    "TreewalkError",
    "arrays",
    "as_selector",
    "constant",
    "diff",
    "everything",
    "export",
    "glob",
    "init",
    "initializer",
    "inside",
    "key_for_path",
    "labels",
    "load",
    "load_plan",
    "mask",
    "materialize",
    "name",
    "nnx_filter",
    "of_type",
    "ones",
    "path_segments",
    "path_str",
    "params",
    "paths",
    "postwalk",
    "predicate",
    "prewalk",
    "regex",
    "replace",
    "select",
    "show",
    "where",
    "zeros",
]


def __dir__() -> list[str]:
    # The API only: not the private modules Python records as attributes on import.
    return [*__all__, "__version__"]

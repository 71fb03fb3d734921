"""treewalk: select nodes of any JAX pytree by path, name, type or glob, and replace them
with `fn(path, node, key)`."""

from importlib import metadata as _metadata

from jax.tree_util import DictKey as DictKey
from jax.tree_util import FlattenedIndexKey as FlattenedIndexKey
from jax.tree_util import GetAttrKey as GetAttrKey
from jax.tree_util import SequenceKey as SequenceKey

from . import init as init
from ._errors import ArgumentError as ArgumentError
from ._errors import CallbackError as CallbackError
from ._errors import InitError as InitError
from ._errors import LabelError as LabelError
from ._errors import LoadError as LoadError
from ._errors import NoMatchError as NoMatchError
from ._errors import PatternError as PatternError
from ._errors import PRNGKeyError as PRNGKeyError
from ._errors import ReplacementError as ReplacementError
from ._errors import SelectorError as SelectorError
from ._errors import StructureError as StructureError
from ._errors import TreewalkError as TreewalkError
from ._export import export as export
from ._helpers import constant as constant
from ._helpers import initializer as initializer
from ._helpers import ones as ones
from ._helpers import zeros as zeros
from ._keys import key_for_path as key_for_path
from ._load import load as load
from ._load import load_plan as load_plan
from ._load_plan import LoadPlan as LoadPlan
from ._materialize import materialize as materialize
from ._nnx import nnx_filter as nnx_filter
from ._node import Node as Node
from ._path import BoxKey as BoxKey
from ._path import path_segments as path_segments
from ._path import path_str as path_str
from ._query import labels as labels
from ._query import mask as mask
from ._query import paths as paths
from ._query import select as select
from ._query import where as where
from ._replace import replace as replace
from ._selectors import Selector as Selector
from ._selectors import arrays as arrays
from ._selectors import as_selector as as_selector
from ._selectors import everything as everything
from ._selectors import glob as glob
from ._selectors import inside as inside
from ._selectors import name as name
from ._selectors import of_type as of_type
from ._selectors import params as params
from ._selectors import predicate as predicate
from ._selectors import regex as regex
from ._show import show as show
from ._walk import postwalk as postwalk
from ._walk import prewalk as prewalk

__version__ = _metadata.version("jax-treewalk")

__all__ = [
    "ArgumentError",
    "BoxKey",
    "CallbackError",
    "DictKey",
    "FlattenedIndexKey",
    "GetAttrKey",
    "InitError",
    "LabelError",
    "LoadError",
    "LoadPlan",
    "NoMatchError",
    "Node",
    "PRNGKeyError",
    "PatternError",
    "ReplacementError",
    "Selector",
    "SelectorError",
    "SequenceKey",
    "StructureError",
    "TreewalkError",
    "arrays",
    "as_selector",
    "constant",
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

"""treewalk: select nodes of any JAX pytree by path, name, type or glob, and replace them
with `fn(path, node, key)`."""

import importlib.metadata

from jax.tree_util import (
    DictKey as DictKey,
    FlattenedIndexKey as FlattenedIndexKey,
    GetAttrKey as GetAttrKey,
    SequenceKey as SequenceKey,
)

from . import init as init
from ._errors import (
    ArgumentError as ArgumentError,
    CallbackError as CallbackError,
    InitError as InitError,
    LabelError as LabelError,
    NoMatchError as NoMatchError,
    PatternError as PatternError,
    PRNGKeyError as PRNGKeyError,
    ReplacementError as ReplacementError,
    SelectorError as SelectorError,
    TreewalkError as TreewalkError,
)
from ._helpers import (
    constant as constant,
    initializer as initializer,
    ones as ones,
    zeros as zeros,
)
from ._keys import key_for_path as key_for_path
from ._path import (
    BoxKey as BoxKey,
    path_segments as path_segments,
    path_str as path_str,
)
from ._query import (
    labels as labels,
    mask as mask,
    paths as paths,
    select as select,
    where as where,
)
from ._replace import replace as replace
from ._selectors import (
    Selector as Selector,
    arrays as arrays,
    as_selector as as_selector,
    everything as everything,
    glob as glob,
    inside as inside,
    name as name,
    of_type as of_type,
    predicate as predicate,
    regex as regex,
)
from ._walk import postwalk as postwalk, prewalk as prewalk

__version__ = importlib.metadata.version("treewalk")

"""Key paths: segments and their rendering."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

Path: TypeAlias = tuple[Any, ...]
Segment: TypeAlias = str | int

if TYPE_CHECKING:
    # JAX declares its key entry types `Any`; type checkers see a `GetAttrKey` of this shape.
    class _GetAttrKey:
        """`jax.tree_util.GetAttrKey`, as type checkers see it."""

        name: str

        def __init__(self, name: str) -> None: ...

else:
    _GetAttrKey = GetAttrKey


class BoxKey(_GetAttrKey):
    """The key entry of a value inside a box (an NNX `Variable`, a linen `Partitioned`, ...).

    It is a `GetAttrKey` (so `jax.tree_util.keystr` and `==` treat it as `.value`), but
    treewalk knows it only unwraps a box, so it is not a segment of the path.
    """

    __slots__ = ()


def _dict_key(entry: Any) -> Segment:
    key = entry.key
    return key if type(key) is str or type(key) is int else _other_key(key)


def _other_key(key: Any) -> Segment:
    return key if isinstance(key, str | int) else str(key)


_SEGMENT: dict[type, Any] = {
    DictKey: _dict_key,
    GetAttrKey: lambda e: e.name,
    SequenceKey: lambda e: e.idx,
    FlattenedIndexKey: lambda e: e.key,
    BoxKey: lambda e: None,
}


def segment(entry: Any) -> Segment | None:
    """The segment one key entry contributes, or `None` for a box entry."""
    f = _SEGMENT.get(type(entry))
    if f is not None:
        return f(entry)
    if isinstance(entry, BoxKey):
        return None
    if isinstance(entry, DictKey):
        return _dict_key(entry)
    if isinstance(entry, GetAttrKey):
        return entry.name
    if isinstance(entry, SequenceKey):
        return entry.idx
    if isinstance(entry, FlattenedIndexKey):
        return entry.key
    # Any other key entry JAX (or a library) may produce: its own text.
    return str(entry)


def path_segments(path: Sequence[Any]) -> tuple[Segment, ...]:
    """The segments of a key path: one plain `str` or `int` per entry.

    Box entries that only unwrap an array (Flax NNX `Variable.value`, linen
    `Partitioned.value`, penzai `Parameter.value`) are dropped, so an NNX bias is
    `("l1", "bias")`. Dict keys that are neither `str` nor `int` become their `str`.
    A Haiku module name such as `"mlp/~/linear_0"` stays one segment.

    **Arguments:**

    - `path`: a key path, as given by treewalk or `jax.tree_util.tree_flatten_with_path`.

    **Returns:**

    A tuple of `str`/`int`.

    !!! Example

        ```python
        import jax
        import treewalk as tw

        path = (jax.tree_util.DictKey("encoder"), jax.tree_util.SequenceKey(0))
        assert tw.path_segments(path) == ("encoder", 0)
        ```
    """
    out = []
    for entry in path:
        seg = segment(entry)
        if seg is not None:
            out.append(seg)
    return tuple(out)


def path_str(path: Sequence[Any]) -> str:
    """Render a key path for people: its segments joined with `/`.

    The root's path `()` renders as `""`. This string is what `tw.regex` matches;
    `tw.glob` works on the segments, never on this string, so a Haiku key that
    holds `/` is still one segment to a glob.

    !!! Example

        ```python
        import jax
        import treewalk as tw

        path = (jax.tree_util.GetAttrKey("layers"), jax.tree_util.SequenceKey(0),
                jax.tree_util.GetAttrKey("bias"))
        assert tw.path_str(path) == "layers/0/bias"
        ```
    """
    return "/".join(map(str, path_segments(path)))


#: Error messages show a path of more characters than this with its middle cut out.
SHOWN_PATH_MAX = 160


def show_path(path: Sequence[Any]) -> str:
    """`path_str` for error messages: the root is shown as `<root>`, and a path too long
    to read (a 900-deep tree's is 1,800 characters) by its two ends."""
    if not path:
        return "<root>"
    text = path_str(path)
    if len(text) <= SHOWN_PATH_MAX:
        return repr(text)
    half = SHOWN_PATH_MAX // 2 - 10
    return f"{text[:half]!r} ... {text[-half:]!r} ({len(path)} entries, the middle cut)"

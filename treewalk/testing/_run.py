"""A law run as a hypothesis test: the settings a check runs under, the transform called
with or without a key, and a failure raised as one `AssertionError` that names the
falsifying tree's paths, whatever hypothesis found (one failure, several distinct ones,
a flaky one, a deadline overrun)."""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable
from typing import Any, TypeAlias, TypeGuard

import jax
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.errors import DeadlineExceeded, Flaky

from .._core.errors import ArgumentError
from ._compare import leaf_list, summary
from ._zoo import Default, Zoo

#: A tree transform under test: `transform(tree)` or `transform(tree, key)`.
Transform: TypeAlias = Callable[[Any], Any] | Callable[[Any, Any], Any]

#: Hypothesis' own default deadline: too short for a first example that compiles.
_DEFAULT_DEADLINE = datetime.timedelta(milliseconds=200)


def keyed(transform: Callable[..., Any]) -> TypeGuard[Callable[[Any, Any], Any]]:
    """Does `transform` take `(tree, key)` rather than `(tree)`?"""
    try:
        sig = inspect.signature(transform)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    return len(positional) >= 2 or (len(positional) == 1 and varargs)


class TransformRaised(AssertionError):
    """The transform under test raised (its exception is the `__cause__`)."""


def call(
    transform: Callable[..., Any],
    tree: Any,
    seed: int,
    *,
    key: Any = None,
    what: str = "the transform",
) -> Any:
    """`transform(tree)`, or `transform(tree, key)` for a keyed one (`key` defaults to
    `jax.random.key(seed)`); an exception it raises becomes a `TransformRaised` (a law
    failure, not an error)."""
    try:
        if keyed(transform):
            return transform(tree, jax.random.key(seed) if key is None else key)
        return transform(tree)
    except Exception as err:
        raise TransformRaised(f"{what} raised {type(err).__name__}: {err}") from err


def check_callable(law: str, transform: Any) -> None:
    if not callable(transform):
        raise ArgumentError(
            f"{law} takes the transform under test first, a callable `transform(tree)` or "
            f"`transform(tree, key)`; got a {type(transform).__name__}."
        )


def run_law(
    law: str,
    prop: Callable[[Any, int], None],
    trees: st.SearchStrategy[Any] | None,
    default: Default,
    transform: Any,
    max_examples: int | None,
    settings: Settings | None,
) -> None:
    """Run `prop(tree, seed)` as a hypothesis test over `trees` (if `None`, `default()`'s
    strategy, its zoo tried first as explicit examples), under the user's settings but
    for what a law needs; a failure is raised as one `AssertionError` (see
    `check_structure_preserving` for the settings used)."""
    if settings is not None and not isinstance(settings, Settings):
        raise ArgumentError(
            f"{law}(settings=...) takes a `hypothesis.settings` object, e.g. "
            f"`settings(max_examples=50)`; got a {type(settings).__name__}."
        )
    zoo: list[Zoo] = []
    if trees is None:
        trees, zoo = default()
    if not isinstance(trees, st.SearchStrategy):
        raise ArgumentError(
            f"{law}(trees=...) takes a hypothesis strategy, e.g. `params_trees()` or "
            f"`st.just(tree)` for one tree; got a {type(trees).__name__}."
        )

    def test(case: Any, seed: int) -> None:
        tree = case.make() if isinstance(case, Zoo) else case
        before = leaf_list(tree)  # before the call, which may change the input
        try:
            prop(tree, seed)
        except AssertionError as err:
            _tag(
                err, before, f"the zoo's {case.name}" if isinstance(case, Zoo) else f"seed {seed}"
            )
            raise

    # Each transform its own entry in the example database (and its own derandomized
    # sequence), as a test function of its own would have.
    name = getattr(transform, "__qualname__", type(transform).__qualname__)
    module = getattr(transform, "__module__", "")
    test._hypothesis_internal_add_digest = f"{law}:{module}.{name}".encode()  # type: ignore[attr-defined]
    run = given(trees, st.integers(0, 2**31 - 1))(test)
    for tree in reversed(zoo):
        run = example(tree, 0)(run)
    configured = _settings(settings, max_examples)(run)
    try:
        configured()
    except (AssertionError, BaseExceptionGroup, Flaky, DeadlineExceeded) as err:
        failure = _one_failure(law, err)
        if failure is None:
            raise
        raise failure[0] from failure[1]


def _settings(user: Settings | None, max_examples: int | None) -> Settings:
    """The user's settings (or the active profile's), but for what a law needs."""
    base = Settings() if user is None else user
    suppress = {*base.suppress_health_check, HealthCheck.too_slow, HealthCheck.data_too_large}
    kw: dict[str, Any] = {"suppress_health_check": sorted(suppress, key=lambda h: h.value)}
    if base.deadline == _DEFAULT_DEADLINE:
        kw["deadline"] = None
    if Phase.explain in base.phases:
        kw["phases"] = [p for p in base.phases if p is not Phase.explain]
    if max_examples is not None:
        kw["max_examples"] = max_examples
    return Settings(base, **kw)


def _tag(err: BaseException, leaves: list[Any], where: str) -> None:
    try:
        err._treewalk_example = (leaves, where)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # pragma: no cover - an exception with __slots__
        pass


def _flat(err: BaseException) -> list[BaseException]:
    if isinstance(err, BaseExceptionGroup):
        return [e for sub in err.exceptions for e in _flat(sub)]
    return [err]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _one_failure(law: str, err: BaseException) -> tuple[AssertionError, BaseException] | None:
    """`(the AssertionError to raise, the failure it comes from)`, or `None` where `err`
    is not a law's failure (hypothesis' own errors about the strategy or settings)."""
    found = _flat(err)
    if isinstance(err, Flaky) and not isinstance(err, BaseExceptionGroup):
        cause = err.__cause__ or err.__context__  # older hypothesis: the failure chained
        found += _flat(cause) if cause is not None else []
    failures = [e for e in found if hasattr(e, "_treewalk_example")]
    failures += [e for e in found if isinstance(e, DeadlineExceeded)]
    if not failures:
        return None
    first = failures[0]
    others = [e for e in found if e is not first]
    lines = [f"{law}: {str(first).strip() or type(first).__name__}"]
    example = getattr(first, "_treewalk_example", None)
    if example is not None:
        leaves, where = example
        n = len(leaves)
        noun = "leaf" if n == 1 else "leaves"
        lines.append(f"Falsifying example ({where}, {n} {noun}):")
        lines.append(summary(leaves))
    if isinstance(first, DeadlineExceeded):
        lines.append("(The deadline is your settings'; `deadline=None` turns it off.)")
    if isinstance(err, Flaky):
        lines.append(
            "Flaky: hypothesis saw this fail, then not fail (or fail otherwise) on the "
            "same tree. The transform depends on something besides its arguments: a "
            "global RNG, a counter, a cache, the clock."
        )
    if others:
        noun = "failure" if len(others) == 1 else "failures"
        lines.append(f"Hypothesis also found {len(others)} other distinct {noun}:")
        lines += [f"  - {_first_line(e)}" for e in others[:5]]
        if len(others) > 5:
            lines.append(f"  ... and {len(others) - 5} more")
    return AssertionError("\n".join(lines)), first

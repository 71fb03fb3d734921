"""The planted bugs (tests/planted_bugs.py): each wrong transform, run through the check
meant to catch it with hypothesis' own defaults (100 examples, random, no example
database; not this suite's deterministic profile, which would try one fixed sequence
only), raises one AssertionError that says why. `python tests/planted_bugs.py` measures
the catch rate over ten fresh runs each."""

import re

import pytest
from planted_bugs import BUGS, defaults


@pytest.mark.parametrize("bug", BUGS, ids=[b.name for b in BUGS])
def test_the_check_catches_the_planted_bug(bug):
    with pytest.raises(AssertionError) as info:
        bug.run(defaults(), None)
    assert type(info.value) is AssertionError  # one, whatever hypothesis found
    first = str(info.value).splitlines()[0]
    assert first.startswith(bug.check.split("(")[0] + ": "), first
    assert re.search(bug.says, first), first
    assert "Falsifying example" in str(info.value)


def test_the_suite_has_the_bugs_of_the_issue():
    names = {b.name for b in BUGS}
    issue = {
        "in-place list reversal",
        "in-place dict update",
        "NNX variable written in place",
        "dtype upcast",
        "global RNG instead of the key",
        "wrong block changed",
        "leaf dropped",
        "tie broken",
        "box unwrapped",
        "shape changed under check=False",
    }
    assert issue <= names and len(names) == len(BUGS) >= 10

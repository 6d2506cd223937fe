"""POS lists: the bulk check of a long list agrees with the position-by-position parser."""

from __future__ import annotations

import random

import pytest

from siasync.errors import UsageError
from siasync.uws.params import parse_pos, parse_positions

FAULTS = ["1,2,3", "abc,1", "1,", "nan,1", "inf,0", "1e999,0", "360,0", "-0.5,0", "10,90.5", "10,-91",
          "1_0,2", "infinity,0", "0x10,2", "1,2 3", "+,1", "1.2.3,4"]


def _numbers(rng: random.Random) -> str:
    ra = rng.choice([f"{rng.uniform(0, 359.9):.6f}", f"{rng.uniform(0, 359.9):.3e}", str(rng.randrange(360)),
                     "0", ".5"])
    dec = rng.choice([f"{rng.uniform(-90, 90):.6f}", f"{rng.uniform(-90, 90):.2E}", "+90", "-90", "-0."])
    pad = rng.choice(["", " ", "\t", "  "])
    return f"{pad}{ra}{pad},{rng.choice(['', ' '])}{dec}{pad}"


def test_a_long_list_parses_like_each_position_alone() -> None:
    rng = random.Random(7)
    for _ in range(50):
        lines = [_numbers(rng) for _ in range(rng.randrange(1, 400))]
        values, start = [], 0
        while start < len(lines):  # split over several POS values, with every separator
            stop = start + rng.randrange(1, 60)
            values.append(rng.choice(["\n", "\r\n", ";", "; ;\n"]).join(lines[start:stop]))
            start = stop
        assert parse_positions(values) == tuple(parse_pos(line) for line in lines)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_anywhere_in_a_long_list_is_named(fault: str) -> None:
    rng = random.Random(fault)
    lines = [_numbers(rng) for _ in range(2000)]
    lines.insert(rng.randrange(len(lines)), fault)
    with pytest.raises(UsageError) as alone:
        parse_pos(fault)
    with pytest.raises(UsageError) as listed:
        parse_positions(["\n".join(lines)])
    assert str(listed.value) == str(alone.value)
    assert listed.value.param == "POS" and repr(fault) in str(listed.value)

"""Time sets: hand-computed cases, and every operation against a minute grid."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain.timeset import (
    Span,
    TimeSet,
    clip,
    intersect,
    normalize,
    overlaps,
    seconds,
    subtract,
    widen,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def m(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def spans(*pairs: tuple[int, int]) -> TimeSet:
    return [(m(a), m(b)) for a, b in pairs]


def test_normalize_sorts_merges_touching_and_drops_empty() -> None:
    raw = spans((30, 40), (0, 10), (10, 20), (5, 8), (50, 50), (60, 55))
    assert normalize(raw) == spans((0, 20), (30, 40))


def test_intersect_and_subtract() -> None:
    a = spans((0, 60), (120, 180))
    b = spans((30, 150))
    assert intersect(a, b) == spans((30, 60), (120, 150))
    assert subtract(a, b) == spans((0, 30), (150, 180))
    assert subtract(b, a) == spans((60, 120))


def test_subtract_with_one_span_covering_several() -> None:
    assert subtract(spans((0, 10), (20, 30), (40, 50)), spans((5, 45))) == spans((0, 5), (45, 50))


def test_clip_widen_seconds() -> None:
    a = spans((0, 60), (100, 110))
    assert clip(a, (m(30), m(105))) == spans((30, 60), (100, 105))
    # Widening merges runs whose allowances meet.
    assert widen(a, timedelta(minutes=30), timedelta(minutes=10)) == spans((-30, 120))
    assert seconds(a) == 70 * 60


# Minute-aligned spans inside [0, 240): exact on a grid of minutes.
span_strategy = st.tuples(st.integers(0, 240), st.integers(0, 240)).map(
    lambda p: (m(min(p)), m(max(p)))
)
set_strategy = st.lists(span_strategy, max_size=8)


def grid(time_set: list[Span]) -> set[int]:
    """The minutes a set covers."""
    minutes: set[int] = set()
    for start, end in time_set:
        first = int((start - T0).total_seconds() // 60)
        last = int((end - T0).total_seconds() // 60)
        minutes.update(range(first, last))
    return minutes


def is_normal(time_set: TimeSet) -> bool:
    return all(s < e for s, e in time_set) and all(
        a[1] < b[0] for a, b in itertools.pairwise(time_set)
    )


@given(set_strategy)
def test_normalize_keeps_the_minutes(raw: list[Span]) -> None:
    normal = normalize(raw)
    assert is_normal(normal)
    assert grid(normal) == grid(raw)
    assert seconds(normal) == 60 * len(grid(raw))


@given(set_strategy, set_strategy)
def test_set_operations_match_the_grid(raw_a: list[Span], raw_b: list[Span]) -> None:
    a, b = normalize(raw_a), normalize(raw_b)
    both = intersect(a, b)
    only_a = subtract(a, b)
    assert is_normal(both)
    assert is_normal(only_a)
    assert grid(both) == grid(a) & grid(b)
    assert grid(only_a) == grid(a) - grid(b)


@given(set_strategy, st.integers(0, 30), st.integers(0, 30))
def test_widen_matches_the_grid(raw: list[Span], before: int, after: int) -> None:
    a = normalize(raw)
    wide = widen(a, timedelta(minutes=before), timedelta(minutes=after))
    expected = {
        minute for start, end in grid_spans(a) for minute in range(start - before, end + after)
    }
    assert is_normal(wide)
    assert grid(wide) == expected


def grid_spans(time_set: TimeSet) -> list[tuple[int, int]]:
    return [
        (int((s - T0).total_seconds() // 60), int((e - T0).total_seconds() // 60))
        for s, e in time_set
    ]


@given(set_strategy, span_strategy)
def test_overlaps_agrees_with_intersect(raw: list[Span], window: Span) -> None:
    time_set = normalize(raw)
    assert overlaps(time_set, window) == bool(intersect(time_set, [window]))

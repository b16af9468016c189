"""Quota pro-rating and fleet capacity, computed by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain.capacity import YEAR_H, InstrumentLoad, capacity, prorate
from instrumetry.domain.registry import Category

GENERAL, SPECIALISED = Category.GENERAL, Category.SPECIALISED


def test_any_calendar_year_is_one_year() -> None:
    assert prorate(1400, 365 * 24) == 1400
    assert prorate(1400, 366 * 24) == 1400
    assert prorate(1200, 24) == pytest.approx(1200 / 365)
    assert prorate(800, 2 * 365 * 24) == 1600


@given(st.floats(0, 5 * YEAR_H), st.floats(0, 5 * YEAR_H))
def test_prorating_never_shrinks_with_a_longer_period(a: float, b: float) -> None:
    shorter, longer = sorted((a, b))
    assert prorate(1400, shorter) <= prorate(1400, longer)


def test_a_year_of_two_instruments() -> None:
    busy = InstrumentLoad(GENERAL, YEAR_H, 2500, 2000, 1300)
    idle = InstrumentLoad(SPECIALISED, YEAR_H, 2500, 500, 200)
    total = capacity([busy, idle])
    assert (total.instruments, total.fully_booked) == (2, 1)
    assert (total.quota_h, total.effective_h) == (2200, 1500)
    assert total.spare_h == 1000  # the busy one has none left; the idle one 1,200 − 200
    assert total.idle_scheduled_h == 500 + 2000
    assert total.effective_vs_quota == pytest.approx(1500 / 2200)


def test_an_empty_group() -> None:
    total = capacity([])
    assert (total.instruments, total.spare_h, total.effective_vs_quota) == (0, 0, None)

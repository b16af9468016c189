"""Register maps and float32 word encoding, shared by the agent and the simulator."""

from __future__ import annotations

import itertools
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain.errors import ConfigError
from instrumetry.domain.registers import (
    MODELS,
    Register,
    Table,
    WordOrder,
    decode_float32,
    encode_float32,
    register_map,
)

float32s = st.floats(width=32, allow_nan=False)


def test_230_volts_is_the_well_known_word_pair() -> None:
    assert encode_float32(230.0) == (0x4366, 0x0000)
    assert encode_float32(230.0, WordOrder.LITTLE) == (0x0000, 0x4366)
    assert decode_float32([0x4366, 0x0000]) == 230.0
    assert decode_float32([0x0000, 0x4366], WordOrder.LITTLE) == 230.0


@given(value=float32s, order=st.sampled_from(WordOrder))
def test_every_float32_round_trips_in_both_word_orders(value: float, order: WordOrder) -> None:
    words = encode_float32(value, order)
    assert all(0 <= word <= 0xFFFF for word in words)
    assert decode_float32(words, order) == value


@given(value=float32s)
def test_word_orders_are_each_others_swap(value: float) -> None:
    big = encode_float32(value, WordOrder.BIG)
    assert encode_float32(value, WordOrder.LITTLE) == (big[1], big[0])


@pytest.mark.parametrize("words", [[], [1], [1, 2, 3], [0x10000, 0], [-1, 0]])
def test_anything_but_two_16_bit_words_is_refused(words: list[int]) -> None:
    with pytest.raises(ValueError, match="two 16-bit words"):
        decode_float32(words)


def test_a_non_finite_reading_is_refused() -> None:
    nan_words = struct.unpack(">HH", struct.pack(">f", math.nan))
    with pytest.raises(ValueError, match="non-finite"):
        Register(0x000C, Table.INPUT).decode(nan_words)


def test_sdm120_keeps_watts_in_input_registers() -> None:
    sdm = register_map("sdm120")
    assert (sdm.voltage.address, sdm.current.address, sdm.power.address) == (0x0, 0x6, 0xC)
    assert {r.table for r in sdm.registers()} == {Table.INPUT}
    assert sdm.power.scale == 1.0
    assert sdm.power.decode(sdm.power.encode(912.5)) == 912.5


def test_ddsu666_keeps_kilowatts_in_holding_registers() -> None:
    ddsu = register_map("ddsu666")
    assert (ddsu.voltage.address, ddsu.current.address, ddsu.power.address) == (
        0x2000,
        0x2002,
        0x2004,
    )
    assert {r.table for r in ddsu.registers()} == {Table.HOLDING}
    assert ddsu.power.encode(1500.0) == encode_float32(1.5)  # the meter says kW
    assert ddsu.power.decode(encode_float32(1.5)) == 1500.0


def test_maps_list_registers_in_address_order_without_overlap() -> None:
    for register_map_ in MODELS.values():
        addresses = [r.address for r in register_map_.registers()]
        assert addresses == sorted(addresses)
        assert all(b - a >= 2 for a, b in itertools.pairwise(addresses))


def test_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown meter model 'sdm630' \(known: ddsu666, sdm120\)"
    ):
        register_map("sdm630")

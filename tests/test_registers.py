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
    DataType,
    Register,
    Table,
    WordOrder,
    decode_value,
    encode_value,
    register_map,
)

float32s = st.floats(width=32, allow_nan=False)


def test_230_volts_is_the_well_known_word_pair() -> None:
    assert encode_value(230.0, DataType.FLOAT32) == (0x4366, 0x0000)
    assert encode_value(230.0, DataType.FLOAT32, WordOrder.LITTLE) == (0x0000, 0x4366)
    assert decode_value([0x4366, 0x0000], DataType.FLOAT32) == 230.0
    assert decode_value([0x0000, 0x4366], DataType.FLOAT32, WordOrder.LITTLE) == 230.0


@given(value=float32s, order=st.sampled_from(WordOrder))
def test_every_float32_round_trips_in_both_word_orders(value: float, order: WordOrder) -> None:
    words = encode_value(value, DataType.FLOAT32, order)
    assert all(0 <= word <= 0xFFFF for word in words)
    assert decode_value(words, DataType.FLOAT32, order) == value


@given(value=float32s)
def test_word_orders_are_each_others_swap(value: float) -> None:
    big = encode_value(value, DataType.FLOAT32, WordOrder.BIG)
    assert encode_value(value, DataType.FLOAT32, WordOrder.LITTLE) == (big[1], big[0])


@pytest.mark.parametrize("words", [[], [1], [1, 2, 3], [0x10000, 0], [-1, 0]])
def test_anything_but_two_16_bit_words_is_refused(words: list[int]) -> None:
    with pytest.raises(ValueError, match="two 16-bit words"):
        decode_value(words, DataType.FLOAT32)


def test_a_non_finite_reading_is_refused() -> None:
    nan_words = struct.unpack(">HH", struct.pack(">f", math.nan))
    with pytest.raises(ValueError, match="non-finite"):
        Register(0x000C, Table.INPUT).decode(nan_words)


def test_sdm120_keeps_watts_in_input_registers() -> None:
    sdm = register_map("sdm120")
    assert [r.address for r in sdm.registers()] == [0x0, 0x6, 0xC]
    assert {r.table for r in sdm.registers()} == {Table.INPUT}
    assert sdm.power.scale == 1.0
    assert sdm.power.decode(sdm.power.encode(912.5)) == 912.5


def test_ddsu666_keeps_kilowatts_in_holding_registers() -> None:
    ddsu = register_map("ddsu666")
    assert [r.address for r in ddsu.registers()] == [0x2000, 0x2002, 0x2004]
    assert {r.table for r in ddsu.registers()} == {Table.HOLDING}
    assert ddsu.power.encode(1500.0) == encode_value(1.5, DataType.FLOAT32)  # the meter says kW
    assert ddsu.power.decode(encode_value(1.5, DataType.FLOAT32)) == 1500.0


def test_maps_list_registers_in_address_order_without_overlap() -> None:
    for register_map_ in MODELS.values():
        addresses = [r.address for r in register_map_.registers()]
        assert addresses == sorted(addresses)
        assert all(b - a >= 2 for a, b in itertools.pairwise(addresses))


def test_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown meter model 'sdm72' \(known: ddsu666, dtsu666, sdm120, sdm630\)",
    ):
        register_map("sdm72")


def test_sdm630_keeps_total_watts_at_0x34() -> None:
    sdm = register_map("sdm630")
    assert (sdm.power.address, sdm.power.table, sdm.power.scale) == (0x34, Table.INPUT, 1.0)
    assert {r.table for r in sdm.registers()} == {Table.INPUT}


def test_dtsu666_keeps_total_power_in_tenths_of_a_watt_at_0x2012() -> None:
    dtsu = register_map("dtsu666")
    assert (dtsu.power.address, dtsu.power.table) == (0x2012, Table.HOLDING)
    assert dtsu.power.decode(encode_value(12345.0, DataType.FLOAT32)) == pytest.approx(1234.5)
    assert dtsu.voltage is not None and dtsu.voltage.decode(
        encode_value(2301.0, DataType.FLOAT32)
    ) == (pytest.approx(230.1))


@pytest.mark.parametrize(
    ("data_type", "raw", "words"),
    [
        (DataType.INT16, -2, (0xFFFE,)),
        (DataType.UINT16, 65534, (0xFFFE,)),
        (DataType.INT32, -2, (0xFFFF, 0xFFFE)),
        (DataType.UINT32, 0x12345, (0x0001, 0x2345)),
    ],
)
def test_integer_types_decode_as_the_meter_wrote_them(
    data_type: DataType, raw: int, words: tuple[int, ...]
) -> None:
    assert encode_value(raw, data_type) == words
    assert decode_value(words, data_type) == raw
    assert decode_value(tuple(reversed(words)), data_type, WordOrder.LITTLE) == raw


@given(
    data_type=st.sampled_from([DataType.INT16, DataType.INT32, DataType.UINT16, DataType.UINT32]),
    order=st.sampled_from(WordOrder),
    raw=st.integers(min_value=-(2**40), max_value=2**40),
)
def test_integers_round_trip_and_clamp_to_their_range(
    data_type: DataType, order: WordOrder, raw: int
) -> None:
    bits = 16 * data_type.words
    signed = data_type in (DataType.INT16, DataType.INT32)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    words = encode_value(raw, data_type, order)
    assert len(words) == data_type.words
    assert decode_value(words, data_type, order) == min(high, max(low, raw))


def test_a_scaled_integer_register_reads_watts() -> None:
    register = Register(0x10, Table.HOLDING, WordOrder.LITTLE, scale=0.1, data_type=DataType.INT32)
    assert register.words == 2
    assert register.decode(register.encode(1234.5)) == pytest.approx(1234.5)
    assert decode_value([1], DataType.UINT16) == 1.0
    with pytest.raises(ValueError, match="int16 needs one 16-bit word"):
        decode_value([1, 2], DataType.INT16)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [({"address": 70_000}, "out of range"), ({"address": 1, "scale": 0.0}, "scale must be")],
)
def test_impossible_registers_are_config_errors(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Register(table=Table.INPUT, **kwargs)  # type: ignore[arg-type]

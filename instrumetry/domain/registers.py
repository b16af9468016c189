"""Power meter register maps, as data both the agent and the simulator read.

A map says where a meter model keeps its measurements: which Modbus table
(input or holding registers), at which address, as an IEEE 754 float32 spread
over two 16-bit words in which order, and the factor that turns the meter's
unit into SI units (CHINT meters report kW, we count watts). Keeping the maps
here, free of any Modbus library, means the simulator serves exactly what the
agent reads, and adding a meter model is adding a line of data.

Sources: Eastron SDM120-Modbus protocol (input registers 30001/30007/30013,
float32, high word first); CHINT DDSU666 manual (registers 2000H/2002H/2004H,
float32 high word first, power in kW, read with function 03).
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from instrumetry.domain.errors import ConfigError

MAX_WORD = 0xFFFF
FLOAT32_WORDS = 2
"""Registers per value: a float32 spans two 16-bit words."""


class Table(enum.StrEnum):
    """The Modbus table a value lives in; it decides the read function code."""

    INPUT = "input"  # function 04, read-only measurements
    HOLDING = "holding"  # function 03


class WordOrder(enum.StrEnum):
    """Which 16-bit half of a 32-bit value comes first on the wire.

    Bytes inside a word are always big-endian (the Modbus rule); the order of
    the two words is the meter vendor's choice.
    """

    BIG = "big"  # high word first (ABCD)
    LITTLE = "little"  # low word first (CDAB)


def encode_float32(value: float, order: WordOrder = WordOrder.BIG) -> tuple[int, int]:
    """The two register words that hold ``value`` as a float32."""
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return (high, low) if order is WordOrder.BIG else (low, high)


def decode_float32(words: Sequence[int], order: WordOrder = WordOrder.BIG) -> float:
    """The float32 held in two register words; ``ValueError`` if they are not two words."""
    if len(words) != FLOAT32_WORDS or not all(0 <= word <= MAX_WORD for word in words):
        raise ValueError(f"a float32 needs two 16-bit words, got {list(words)!r}")
    high, low = (words[0], words[1]) if order is WordOrder.BIG else (words[1], words[0])
    value: float = struct.unpack(">f", struct.pack(">HH", high, low))[0]
    return value


@dataclass(frozen=True, slots=True)
class Register:
    """One float32 measurement: where it is and how to turn it into SI units."""

    address: int
    table: Table
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0
    """SI value = raw value × scale (1000 for a meter that reports kW)."""

    def decode(self, words: Sequence[int]) -> float:
        """The SI value of the words read at ``address``; ``ValueError`` if not finite."""
        value = decode_float32(words, self.word_order) * self.scale
        if not math.isfinite(value):
            raise ValueError(f"register {self.address:#06x} holds a non-finite value")
        return value

    def encode(self, value: float) -> tuple[int, int]:
        """The words a meter would serve for the SI value ``value``."""
        return encode_float32(value / self.scale, self.word_order)


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where one meter model keeps voltage, current and active power."""

    model: str
    description: str
    voltage: Register
    current: Register
    power: Register

    def registers(self) -> list[Register]:
        """Every mapped register, in address order."""
        return sorted((self.voltage, self.current, self.power), key=lambda r: r.address)


_MAPS = (
    RegisterMap(
        model="sdm120",
        description="Eastron SDM120-Modbus, single phase (input registers, W)",
        voltage=Register(0x0000, Table.INPUT),
        current=Register(0x0006, Table.INPUT),
        power=Register(0x000C, Table.INPUT),
    ),
    RegisterMap(
        model="ddsu666",
        description="CHINT DDSU666, single phase (holding registers, kW)",
        voltage=Register(0x2000, Table.HOLDING),
        current=Register(0x2002, Table.HOLDING),
        power=Register(0x2004, Table.HOLDING, scale=1000.0),
    ),
)

MODELS: Mapping[str, RegisterMap] = {register_map.model: register_map for register_map in _MAPS}
"""Every supported meter model by name."""


def register_map(model: str) -> RegisterMap:
    """The map of ``model``, or a ``ConfigError`` listing the known models."""
    try:
        return MODELS[model]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown meter model {model!r} (known: {known})") from None

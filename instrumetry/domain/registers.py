"""Power meter register maps, as data both the agent and the simulator read.

A map says where a meter model keeps its measurements: which Modbus table
(input or holding registers), at which address, in which data type (IEEE 754
float32 or a 16/32-bit integer) spread over 16-bit words in which order, and
the factor that turns the meter's unit into SI units (CHINT DDSU666 reports
kW, DTSU666 0.1 W; we count watts). Keeping the maps here, free of any Modbus
library, means the simulator serves exactly what the agent reads, and adding
a meter model is adding a line of data; a meter we do not know is described
by the same ``Register`` in the agent's config.

Sources: Eastron SDM120-Modbus and SDM630-Modbus protocols (input registers
30001/30007 for phase 1 voltage/current, 30013 power on the SDM120, 30053 total
system power on the SDM630; float32, high word first); CHINT DDSU666 manual
(2000H/2002H/2004H, V, A, kW, function 03); CHINT DTSU666 manual (2006H Ua in
0.1 V, 200CH Ia in 0.001 A, 2012H Pt total active power in 0.1 W, float32,
function 03).
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from instrumetry.domain.errors import ConfigError

MAX_WORD = 0xFFFF


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


class DataType(enum.StrEnum):
    """How a value is stored in its words; the value is the ``struct`` code."""

    FLOAT32 = "float32"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"

    @property
    def words(self) -> int:
        """How many 16-bit registers one value takes."""
        return 1 if self in (DataType.INT16, DataType.UINT16) else 2

    @property
    def _code(self) -> str:
        return {"float32": "f", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I"}[self]


def encode_value(
    value: float, data_type: DataType, order: WordOrder = WordOrder.BIG
) -> tuple[int, ...]:
    """The register words that hold ``value``; integers are rounded and clamped to range."""
    if data_type is not DataType.FLOAT32:
        bits = 16 * data_type.words
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if data_type in (DataType.UINT16, DataType.UINT32):
            low, high = 0, 2**bits - 1
        value = min(high, max(low, round(value)))
    packed = struct.pack(">" + data_type._code, value)
    words = struct.unpack(f">{data_type.words}H", packed)
    return words if order is WordOrder.BIG else tuple(reversed(words))


def decode_value(
    words: Sequence[int], data_type: DataType, order: WordOrder = WordOrder.BIG
) -> float:
    """The value held in ``words``; ``ValueError`` if they are not the right 16-bit words."""
    if len(words) != data_type.words or not all(0 <= word <= MAX_WORD for word in words):
        needs = "one 16-bit word" if data_type.words == 1 else "two 16-bit words"
        raise ValueError(f"{data_type} needs {needs}, got {list(words)!r}")
    ordered = list(words) if order is WordOrder.BIG else list(reversed(words))
    packed = struct.pack(f">{data_type.words}H", *ordered)
    value: float = struct.unpack(">" + data_type._code, packed)[0]
    return float(value)


@dataclass(frozen=True, slots=True)
class Register:
    """One measurement: where it is, how it is stored, and how to turn it into SI units."""

    address: int
    table: Table
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0
    """SI value = raw value × scale (1000 for a meter that reports kW)."""
    data_type: DataType = DataType.FLOAT32

    def __post_init__(self) -> None:
        if not 0 <= self.address <= MAX_WORD + 1 - self.data_type.words:
            raise ConfigError(f"register address {self.address} is out of range 0-65535")
        if not (math.isfinite(self.scale) and self.scale != 0):
            raise ConfigError(f"register {self.address:#06x}: scale must be finite and not 0")

    @property
    def words(self) -> int:
        """How many registers to read."""
        return self.data_type.words

    def decode(self, words: Sequence[int]) -> float:
        """The SI value of the words read at ``address``; ``ValueError`` if not finite."""
        value = decode_value(words, self.data_type, self.word_order) * self.scale
        if not math.isfinite(value):
            raise ValueError(f"register {self.address:#06x} holds a non-finite value")
        return value

    def encode(self, value: float) -> tuple[int, ...]:
        """The words a meter would serve for the SI value ``value``."""
        return encode_value(value / self.scale, self.data_type, self.word_order)


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where one meter model keeps active power, and voltage and current if mapped.

    The agent reads only ``power``; the simulator serves all three.
    """

    model: str
    description: str
    power: Register
    voltage: Register | None = None
    current: Register | None = None

    def registers(self) -> list[Register]:
        """Every mapped register, in address order."""
        mapped = (r for r in (self.voltage, self.current, self.power) if r is not None)
        return sorted(mapped, key=lambda r: r.address)


_MAPS = (
    RegisterMap(
        model="sdm120",
        description="Eastron SDM120-Modbus, single phase (input registers, float32, W)",
        voltage=Register(0x0000, Table.INPUT),
        current=Register(0x0006, Table.INPUT),
        power=Register(0x000C, Table.INPUT),
    ),
    RegisterMap(
        model="sdm630",
        description="Eastron SDM630-Modbus, three phase (input registers, float32, W total)",
        voltage=Register(0x0000, Table.INPUT),  # phase 1
        current=Register(0x0006, Table.INPUT),  # phase 1
        power=Register(0x0034, Table.INPUT),  # total system power
    ),
    RegisterMap(
        model="ddsu666",
        description="CHINT DDSU666, single phase (holding registers, float32, kW)",
        voltage=Register(0x2000, Table.HOLDING),
        current=Register(0x2002, Table.HOLDING),
        power=Register(0x2004, Table.HOLDING, scale=1000.0),
    ),
    RegisterMap(
        model="dtsu666",
        description="CHINT DTSU666, three phase (holding registers, float32, 0.1 W total)",
        voltage=Register(0x2006, Table.HOLDING, scale=0.1),  # Ua, 0.1 V
        current=Register(0x200C, Table.HOLDING, scale=0.001),  # Ia, 0.001 A
        power=Register(0x2012, Table.HOLDING, scale=0.1),  # Pt, 0.1 W
    ),
)

MODELS: Mapping[str, RegisterMap] = {register_map.model: register_map for register_map in _MAPS}
"""Every built-in meter model by name."""


def register_map(model: str) -> RegisterMap:
    """The map of ``model``, or a ``ConfigError`` listing the known models."""
    try:
        return MODELS[model]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown meter model {model!r} (known: {known})") from None

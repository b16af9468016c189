"""Reading active power from a Modbus TCP meter.

The synchronous ``ModbusTcpClient`` is used on purpose: the agent polls one
meter every few seconds from one loop, so a blocking read bounded by
``timeout_s`` is all it needs, and it keeps asyncio out of the agent (the MQTT
client has its own network thread). Any failure (no connection, timeout,
Modbus exception, garbage value) gives ``None``, never 0 W: "meter unreachable"
must become ``unknown``, not ``off``. After a failure the connection is
dropped and re-opened on a later poll, waiting 1, 2, 4, ... up to
``backoff_max_s`` seconds between attempts so a dead gateway is not hammered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from agents.config import MeterConfig
from instrumetry.domain.registers import FLOAT32_WORDS, Register, RegisterMap, Table, register_map

log = logging.getLogger(__name__)

MAX_PLAUSIBLE_W = 1e7
"""Above this a reading is garbage, not an instrument (the wire format's limit too)."""


class MeterReader:
    """Active power of one meter unit, in watts, or ``None`` when it cannot be read."""

    def __init__(
        self,
        host: str,
        port: int,
        unit: int,
        register_map: RegisterMap,
        *,
        timeout_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unit = unit
        self.map = register_map
        self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        self.where = f"meter {host}:{port} unit {unit}"
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._failures = 0
        self._retry_at = 0.0
        self.last_error: str | None = None
        """Why the last read failed, for ``agent check`` to show."""

    @classmethod
    def from_config(cls, config: MeterConfig) -> MeterReader:
        return cls(
            config.host,
            config.port,
            config.unit,
            register_map(config.model),
            timeout_s=config.timeout_s,
        )

    def read_power(self) -> float | None:
        """Watts drawn now; ``None`` if the meter cannot be read (or we are backing off)."""
        if self._failures and self._clock() < self._retry_at:
            return None
        try:
            watts = self._read(self.map.power)
        except (ModbusException, OSError, ValueError) as error:
            self._failed(error)
            return None
        if self._failures:
            log.info("%s answers again after %d failed reads", self.where, self._failures)
            self._failures = 0
        return watts

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def _read(self, register: Register) -> float:
        read: Callable[..., ModbusPDU] = (
            self._client.read_input_registers
            if register.table is Table.INPUT
            else self._client.read_holding_registers
        )
        response = read(register.address, count=FLOAT32_WORDS, device_id=self.unit)
        if response.isError():
            raise ValueError(f"Modbus exception response {response}")
        # A reversed current transformer shows consumption as negative power.
        watts = abs(register.decode(response.registers))
        if watts > MAX_PLAUSIBLE_W:
            raise ValueError(f"implausible power {watts} W")
        return watts

    def _failed(self, error: Exception) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
        self.last_error = str(error)
        self._failures += 1
        delay = min(self._backoff_max_s, 2.0 ** (self._failures - 1))
        self._retry_at = self._clock() + delay
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "%s: read failed (%s); retrying in %.0f s", self.where, error, delay)

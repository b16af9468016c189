"""Reading active power from a Modbus meter, over TCP or RTU (a serial RS485 line).

The synchronous pymodbus clients (``ModbusTcpClient``, ``ModbusSerialClient``)
are used on purpose: the agent polls one meter every few seconds from one
loop, so a blocking read bounded by ``timeout_s`` is all it needs, and it keeps
asyncio out of the agent (the MQTT client has its own network thread). Any
failure (no connection, no such serial device, timeout, CRC error, Modbus
exception, garbage value) gives ``None``, never 0 W: "meter unreachable" must
become ``unknown``, not ``off``. After a failure the connection is dropped and
re-opened on a later poll, waiting 1, 2, 4, ... up to ``backoff_max_s`` seconds
between attempts so a dead gateway is not hammered; a meter that answers again
is picked up by the next attempt, without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from agents.config import MeterConfig
from instrumetry.domain.registers import Register, RegisterMap, Table

log = logging.getLogger(__name__)

MAX_PLAUSIBLE_W = 1e7
"""Above this a reading is garbage, not an instrument (the wire format's limit too)."""


class MeterReader:
    """Active power of one meter unit, in watts, or ``None`` when it cannot be read."""

    def __init__(
        self,
        client: ModbusTcpClient | ModbusSerialClient,
        where: str,
        unit: int,
        register_map: RegisterMap,
        *,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unit = unit
        self.map = register_map
        self._client = client
        self.where = where
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._failures = 0
        self._retry_at = 0.0
        self.last_error: str | None = None
        """Why the last read failed, for ``agent check`` to show."""

    @classmethod
    def tcp(
        cls,
        host: str,
        port: int,
        unit: int,
        register_map: RegisterMap,
        *,
        timeout_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> MeterReader:
        """A reader of ``unit`` behind a Modbus TCP server or RS485 gateway."""
        client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        where = f"meter {host}:{port} unit {unit}"
        return cls(client, where, unit, register_map, backoff_max_s=backoff_max_s, clock=clock)

    @classmethod
    def from_config(
        cls, config: MeterConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> MeterReader:
        """The reader ``config`` describes, TCP or RTU; nothing is opened until the first read."""
        client: ModbusTcpClient | ModbusSerialClient
        if config.kind == "rtu":
            client = ModbusSerialClient(
                config.device or "",
                baudrate=config.baudrate,
                parity=config.parity,
                stopbits=config.stopbits,
                bytesize=config.bytesize,
                timeout=config.timeout_s,
                retries=0,
            )
        else:
            client = ModbusTcpClient(
                config.host or "", port=config.port, timeout=config.timeout_s, retries=0
            )
        return cls(
            client,
            config.where,
            config.unit,
            config.register_map(),
            backoff_max_s=config.backoff_max_s,
            clock=clock,
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
        response = read(register.address, count=register.words, device_id=self.unit)
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

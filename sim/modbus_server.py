"""A Modbus server of virtual meters: one unit id per meter, like an RS485 gateway or bus.

It listens on TCP, or speaks RTU on a serial device (a real port, or one end
of a ``socat`` pseudo-terminal pair in tests).

Each unit serves its model's register map (``instrumetry.domain.registers``),
so the agent reads the simulator exactly as it reads a real meter. Register
values are refreshed when a request arrives and the last refresh is older than
``refresh_s`` (0.2 s by default): a real meter also updates its registers a
few times a second, and refreshing on demand needs no background task and
never serves a value staler than that period.

Built on pymodbus's ``SimDevice`` datastore, whose request hook lets a unit
refuse a request (``fail = "exception"``) or stay silent (``fail = "no_reply"``,
via the server's "ignore missing devices" switch). On a serial line a unit
can also garble its replies (``fail = "corrupt"``: the last CRC byte is
flipped on the way out, through the server's packet hook), as line noise does.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from instrumetry.domain.errors import ConfigError, ServiceError
from instrumetry.domain.registers import Register, Table
from sim.meters import VirtualMeter

Clock = Callable[[], float]

MAX_UNIT_ID = 247
"""Modbus unit ids 1-247 address devices; 0 is broadcast, 248-255 are reserved."""

_TABLE_OF_FUNCTION = {3: Table.HOLDING, 4: Table.INPUT}


class _Unit:
    """The registers of one virtual meter, refreshed on demand from its readings."""

    def __init__(self, meter: VirtualMeter, clock: Clock, refresh_s: float) -> None:
        self.meter = meter
        self.clock = clock
        self.refresh_s = refresh_s
        self.refreshed_at = -float("inf")

    def device(self, unit_id: int) -> SimDevice:
        simdata = [
            SimData(
                register.address,
                values=[0] * register.words,
                datatype=DataType.REGISTERS,
                readonly=True,
            )
            for register in self.meter.map.registers()
        ]
        return SimDevice(id=unit_id, simdata=simdata, action=self.on_request)

    async def on_request(  # noqa: PLR0917 (pymodbus calls it with six positionals)
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus's hook before a request is served; may refresh or refuse it."""
        if self.meter.fail == "no_reply":
            raise NoSuchIdException("virtual meter set to fail without reply")
        if self.meter.fail == "exception":
            return ExcCodes.DEVICE_FAILURE
        if set_values is not None or _TABLE_OF_FUNCTION.get(function_code) != self._table:
            return ExcCodes.ILLEGAL_FUNCTION
        now = self.clock()
        if now - self.refreshed_at >= self.refresh_s:
            self.refreshed_at = now
            self._write(registers, start_address, now)
        return None

    @property
    def _table(self) -> Table:
        return self.meter.map.power.table

    def _write(self, registers: list[int], start_address: int, now: float) -> None:
        readings = self.meter.readings(now)
        mapped: list[tuple[Register | None, float]] = [
            (self.meter.map.voltage, readings.voltage_v),
            (self.meter.map.current, readings.current_a),
            (self.meter.map.power, readings.power_w),
        ]
        for register, value in mapped:
            if register is None:
                continue
            offset = register.address - start_address
            if offset >= 0 and offset + register.words <= len(registers):
                registers[offset : offset + register.words] = register.encode(value)


@dataclass(frozen=True, slots=True)
class SerialLine:
    """Where and how a server speaks RTU: the device and its line settings."""

    device: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8


class MeterServer:
    """A running Modbus server of ``meters`` keyed by unit id, on TCP or on ``serial``.

    On TCP, port 0 picks a free port; ``start`` returns the port actually bound
    (0 on a serial line).
    """

    def __init__(
        self,
        meters: Mapping[int, VirtualMeter],
        *,
        host: str = "127.0.0.1",
        port: int = 502,
        serial: SerialLine | None = None,
        clock: Clock = time.time,
        refresh_s: float = 0.2,
    ) -> None:
        if not meters:
            raise ConfigError("the Modbus simulator needs at least one meter")
        for unit_id, meter in meters.items():
            if not 1 <= unit_id <= MAX_UNIT_ID:
                raise ConfigError(f"unit id {unit_id} is out of range 1-{MAX_UNIT_ID}")
            if len({register.table for register in meter.map.registers()}) != 1:
                raise ConfigError(f"meter model {meter.map.model!r} mixes register tables")
        self.host = host
        self.port = port
        self.serial = serial
        self._units = {unit_id: _Unit(meter, clock, refresh_s) for unit_id, meter in meters.items()}
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    async def start(self) -> int:
        """Listen for clients; return the bound port, or raise ``ServiceError``."""
        devices = [unit.device(unit_id) for unit_id, unit in sorted(self._units.items())]
        if self.serial is not None:
            line = self.serial
            self._server = ModbusSerialServer(
                devices,
                port=line.device,
                baudrate=line.baudrate,
                parity=line.parity,
                stopbits=line.stopbits,
                bytesize=line.bytesize,
                ignore_missing_devices=True,
                trace_packet=self._garble,
            )
            where = line.device
        else:
            self._server = ModbusTcpServer(
                devices, address=(self.host, self.port), ignore_missing_devices=True
            )
            where = f"{self.host}:{self.port}"
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError:
            raise ServiceError(f"cannot listen on {where}: {self._why_not()}") from None
        listener = self._server.transport
        if isinstance(listener, asyncio.Server) and listener.sockets:
            self.port = int(listener.sockets[0].getsockname()[1])
        return 0 if self.serial is not None else self.port

    def _why_not(self) -> str:
        """Why listening failed: pymodbus only logs the cause, so bind once more to learn it."""
        if self.serial is not None:
            return "no such device, or no permission to open it"
        with socket.socket() as probe:
            try:
                probe.bind((self.host, self.port))
            except OSError as error:
                return error.strerror or str(error)
        return "pymodbus refused it"

    def _garble(self, sending: bool, packet: bytes) -> bytes:
        """Flip the CRC's last byte of a reply from a unit set to ``corrupt``."""
        unit = self._units.get(packet[0]) if sending and packet else None
        if unit is not None and unit.meter.fail == "corrupt":
            return packet[:-1] + bytes([packet[-1] ^ 0xFF])
        return packet

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None


async def serve_meters(
    meters: Mapping[int, VirtualMeter],
    host: str,
    port: int,
    stop_event: asyncio.Event,
    *,
    serial: SerialLine | None = None,
    clock: Clock = time.time,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve ``meters`` until ``stop_event`` is set; ``on_ready`` gets the bound port."""
    server = MeterServer(meters, host=host, port=port, serial=serial, clock=clock)
    bound = await server.start()
    try:
        if on_ready is not None:
            on_ready(bound)
        await stop_event.wait()
    finally:
        await server.stop()


class MeterServerThread:
    """``serve_meters`` on an event loop of its own, for synchronous callers.

    The agent and the tests are synchronous code; this runs the simulator
    beside them. Use as a context manager; entering returns the bound port.
    """

    def __init__(
        self,
        meters: Mapping[int, VirtualMeter],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        serial: SerialLine | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._args = (meters, host, port, serial, clock)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modbus-sim", daemon=True)
        self.port = 0

    def __enter__(self) -> int:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise ServiceError("the Modbus simulator did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self.port

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # handed to the thread that entered
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        meters, host, port, serial, clock = self._args
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await serve_meters(
            meters, host, port, self._stop, serial=serial, clock=clock, on_ready=self._on_ready
        )

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

"""The simulator's Modbus server read by the agent's meter reader, over real TCP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.meter import MeterReader
from instrumetry.domain.errors import ConfigError, ServiceError
from instrumetry.domain.registers import register_map
from sim.meters import FailMode, Schedule, ScheduledInstrument, Segment, VirtualMeter, meter_bank
from sim.modbus_server import MeterServer, MeterServerThread

INSTRUMETRY = str(Path(sys.executable).parent / "instrumetry")
SCHEDULE = Schedule([Segment(10, 0.0), Segment(10, 40.0), Segment(10, 900.0)])


class Clock:
    """A clock the test moves by hand; the server and the reader's backoff follow it."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def meters(clock: Clock) -> dict[int, VirtualMeter]:
    instrument = ScheduledInstrument(SCHEDULE, start=clock.now)
    return {
        1: VirtualMeter(instrument.power_w, model="sdm120", seed=1),
        2: VirtualMeter(instrument.power_w, model="ddsu666", seed=2),
    }


@pytest.fixture
def port(meters: dict[int, VirtualMeter], clock: Clock) -> Iterator[int]:
    with MeterServerThread(meters, clock=clock) as bound:
        yield bound


def reader(port: int, unit: int, model: str, clock: Clock, timeout_s: float = 0.3) -> MeterReader:
    return MeterReader.tcp(
        "127.0.0.1", port, unit, register_map(model), timeout_s=timeout_s, clock=clock
    )


@pytest.mark.parametrize(("unit", "model"), [(1, "sdm120"), (2, "ddsu666")])
def test_power_follows_the_virtual_instrument(
    port: int, clock: Clock, unit: int, model: str
) -> None:
    meter = reader(port, unit, model, clock)
    seen = []
    for elapsed in (1, 5, 11, 15, 21, 25, 31):  # off, off, standby, standby, run, run, off
        clock.now = 1_000.0 + elapsed
        seen.append(meter.read_power())
    meter.close()

    expected = [0, 0, 40, 40, 900, 900, 0]
    for watts, truth in zip(seen, expected, strict=True):
        assert watts is not None
        assert abs(watts - truth) <= 3 + 0.06 * truth  # three sigma of the meter's noise


def test_registers_refresh_at_most_every_fifth_of_a_second(port: int, clock: Clock) -> None:
    meter = reader(port, 1, "sdm120", clock)
    clock.now = 1_025.0
    first = meter.read_power()
    assert meter.read_power() == first  # same instant: same registers
    clock.now += 0.2
    assert meter.read_power() != first  # fresh noise
    meter.close()


@pytest.mark.parametrize("mode", ["exception", "no_reply"])
def test_a_failing_unit_reads_as_none_then_recovers(
    port: int, meters: dict[int, VirtualMeter], clock: Clock, mode: FailMode
) -> None:
    meter = reader(port, 1, "sdm120", clock)
    clock.now = 1_025.0
    assert meter.read_power() is not None

    meters[1].fail = mode
    started = time.monotonic()
    assert meter.read_power() is None
    assert time.monotonic() - started < 1.0  # bounded by the 0.3 s timeout
    assert meter.last_error is not None
    meters[1].fail = None
    assert meter.read_power() is None  # backing off: no new attempt yet

    clock.now += 1.0  # the first backoff step
    assert meter.read_power() is not None
    assert meters[2].fail is None
    meter.close()


def test_reading_the_wrong_table_fails(port: int, clock: Clock) -> None:
    sdm_as_ddsu = reader(port, 1, "ddsu666", clock)  # holding registers on an input-register meter
    assert sdm_as_ddsu.read_power() is None
    assert "Exception" in (sdm_as_ddsu.last_error or "")
    sdm_as_ddsu.close()


def test_an_unreachable_meter_reads_as_none_and_backs_off(
    clock: Clock, unused_ports: Callable[[int], list[int]]
) -> None:
    meter = reader(unused_ports(1)[0], 1, "sdm120", clock)
    for expected_delay in (1, 2, 4, 8):
        assert meter.read_power() is None
        clock.now += expected_delay - 0.01
        assert meter.read_power() is None  # still backing off: no attempt
        clock.now += 0.01
    assert meter.last_error is not None
    meter.close()


def test_a_bank_of_meters_serves_every_unit_id() -> None:
    bank = meter_bank(4, model="sdm120", start=time.time(), acceleration=60, seed=3)
    assert sorted(bank) == [1, 2, 3, 4]
    with MeterServerThread(bank) as bound:
        clock = Clock()
        values = [reader(bound, unit, "sdm120", clock).read_power() for unit in bank]
    assert all(v is not None and 0 <= v < 1100 for v in values)


def test_server_refuses_bad_setups(meters: dict[int, VirtualMeter], port: int) -> None:
    with pytest.raises(ConfigError, match="unit id 0 is out of range"):
        MeterServer({0: meters[1]})
    with pytest.raises(ConfigError, match="at least one meter"):
        MeterServer({})
    with (
        pytest.raises(ServiceError, match=f"cannot listen on 127.0.0.1:{port}: Address already"),
        MeterServerThread(meters, port=port),
    ):
        pass


def test_sim_modbus_on_a_busy_port_says_so_in_one_line(port: int) -> None:
    result = subprocess.run(
        [INSTRUMETRY, "sim", "modbus", "--port", str(port)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"instrumetry: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )

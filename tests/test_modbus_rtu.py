"""Modbus RTU: the simulator on one end of a socat pseudo-terminal pair, the agent's reader on
the other, so framing, CRC and timeouts are the real serial code paths."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.config import MeterConfig, RegisterConfig, load_config
from agents.meter import MeterReader
from instrumetry.domain.registers import DataType, RegisterMap, Table, WordOrder
from sim.meters import FailMode, Schedule, ScheduledInstrument, Segment, VirtualMeter
from sim.modbus_server import MeterServerThread, SerialLine
from tests.agent_rig import pty_pair

SCHEDULE = Schedule([Segment(10, 0.0), Segment(10, 40.0), Segment(10, 2500.0)])
BAUD = 38400
INSTRUMETRY = str(Path(sys.executable).parent / "instrumetry")


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with pty_pair(tmp_path) as ends:
        yield ends


CUSTOM = RegisterConfig(
    address=0x0100,
    function=Table.INPUT,
    data_type=DataType.INT32,
    word_order=WordOrder.LITTLE,
    scale=0.1,
)


def meter_config(device: str, unit: int, model: str) -> MeterConfig:
    return MeterConfig(
        kind="rtu",
        device=device,
        baudrate=BAUD,
        unit=unit,
        model=model,
        register=CUSTOM if model == "custom" else None,
        timeout_s=0.3,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def meters(clock: Clock) -> dict[int, VirtualMeter]:
    power = ScheduledInstrument(SCHEDULE, start=clock.now).power_w
    custom = RegisterMap("custom", "test", power=CUSTOM.to_domain())
    return {
        1: VirtualMeter(power, model="sdm630", seed=1),
        2: VirtualMeter(power, model="dtsu666", seed=2),
        3: VirtualMeter(power, registers=custom, seed=3),
    }


@pytest.fixture
def agent_end(pty: tuple[str, str], meters: dict[int, VirtualMeter], clock: Clock) -> Iterator[str]:
    meter_end, agent_tty = pty
    line = SerialLine(meter_end, baudrate=BAUD)  # a pty refuses parity settings
    with MeterServerThread(meters, serial=line, clock=clock):
        yield agent_tty


@pytest.mark.parametrize(("unit", "model"), [(1, "sdm630"), (2, "dtsu666"), (3, "custom")])
def test_power_is_read_over_rtu_with_each_map(
    agent_end: str, clock: Clock, unit: int, model: str
) -> None:
    meter = MeterReader.from_config(meter_config(agent_end, unit, model), clock=clock)
    seen = []
    for elapsed in (5, 15, 25):  # off, standby, running
        clock.now = 1_000.0 + elapsed
        seen.append(meter.read_power())
    meter.close()
    for watts, truth in zip(seen, [0, 40, 2500], strict=True):
        assert watts is not None, meter.last_error
        assert abs(watts - truth) <= 3 + 0.06 * truth


@pytest.mark.parametrize("mode", ["corrupt", "exception", "no_reply"])
def test_crc_errors_exceptions_and_silence_read_as_none_then_recover_without_restart(
    agent_end: str, meters: dict[int, VirtualMeter], clock: Clock, mode: FailMode
) -> None:
    meter = MeterReader.from_config(meter_config(agent_end, 1, "sdm630"), clock=clock)
    clock.now = 1_025.0
    assert meter.read_power() is not None, meter.last_error

    meters[1].fail = mode
    started = time.monotonic()
    assert meter.read_power() is None
    assert time.monotonic() - started < 2.0
    assert meter.last_error
    meters[1].fail = None
    assert meter.read_power() is None  # backing off
    clock.now += 1.0
    watts = meter.read_power()
    assert watts is not None, meter.last_error
    assert abs(watts - 2500) < 200
    meter.close()


def test_a_missing_serial_device_reads_as_none(tmp_path: Path, clock: Clock) -> None:
    config = meter_config(str(tmp_path / "no-such-tty"), 1, "sdm630")
    meter = MeterReader.from_config(config, clock=clock)
    assert meter.read_power() is None
    assert meter.last_error
    meter.close()


def instrumetry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INSTRUMETRY, *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_an_agent_enrolled_for_an_rtu_meter_reads_it_at_once(
    agent_end: str, mqtt_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "agent.toml"
    enroll = ["agent", "enroll", "--instrument", "nmr-rtu", "--broker", mqtt_url]
    enrolled = instrumetry(
        *enroll, "--meter-device", agent_end, "--meter-baudrate", str(BAUD),
        "--model", "sdm630", "--out", str(out),
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    meter = load_config(out).meter
    assert (meter.kind, meter.device, meter.baudrate, meter.host) == ("rtu", agent_end, BAUD, None)

    checked = instrumetry("agent", "check", "--config", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"meter {agent_end} unit 1 (sdm630): " in checked.stdout
    assert " W\n" in checked.stdout

    for meter_options in ([], ["--meter-host", "10.0.0.5", "--meter-device", agent_end]):
        refused = instrumetry(*enroll, *meter_options, "--out", str(tmp_path / "other.toml"))
        assert refused.returncode == 2
        assert refused.stderr == (
            "instrumetry: error: agent enroll: give either --meter-host (Modbus TCP) "
            "or --meter-device (Modbus RTU)\n"
        )
    assert not (tmp_path / "other.toml").exists()

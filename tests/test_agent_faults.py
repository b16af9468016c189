"""Faults end to end: simulated meter -> agent process -> Mosquitto -> collector process -> DB.

Each test breaks one thing while the instrument keeps switching states —
kill -9 of the agent, the broker down, the collector down, the meter
unplugged — and ends with ``settle_and_verify``: every event the agent made
is in the database exactly once and the signed hash chain is intact. Each
runs with the meter on Modbus TCP and on RTU through a socat pseudo-terminal
pair. The default forms take seconds; ``--long`` runs them for minutes or
many rounds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from instrumetry.devstack.stack import DevStack
from instrumetry.domain.states import State
from sim.meters import Schedule, ScheduledInstrument, Segment, VirtualMeter
from sim.modbus_server import MeterServerThread, SerialLine
from tests.agent_rig import AgentRig, agent_rig, pty_pair, wait_for

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

SCHEDULE = Schedule([Segment(0.8, 0.0), Segment(0.8, 40.0), Segment(0.8, 900.0)])
"""Three transitions every 2.4 s of real time."""
RTU_BAUD = 38400


@pytest.fixture(scope="module")
def faults_database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_agent_faults") as url:
        yield url


@pytest.fixture
def sim_meter() -> VirtualMeter:
    return VirtualMeter(ScheduledInstrument(SCHEDULE, start=time.time()).power_w, seed=11)


@pytest.fixture(params=["tcp", "rtu"])
def meter_link(
    request: pytest.FixtureRequest, tmp_path: Path, sim_meter: VirtualMeter
) -> Iterator[dict[str, Any]]:
    """The simulated meter served over Modbus TCP, or over RTU on a socat pty pair.

    Yields the agent's ``[meter]`` settings to reach it.
    """
    if request.param == "tcp":
        with MeterServerThread({1: sim_meter}) as port:
            yield {"host": "127.0.0.1", "port": port}
        return
    with (
        pty_pair(tmp_path) as (meter_end, agent_end),
        MeterServerThread({1: sim_meter}, serial=SerialLine(meter_end, baudrate=RTU_BAUD)),
    ):
        yield {"kind": "rtu", "device": agent_end, "baudrate": RTU_BAUD, "timeout_s": 0.3}


@pytest.fixture
def rig(
    tmp_path: Path, faults_database: str, mqtt_url: str, meter_link: dict[str, Any]
) -> Iterator[AgentRig]:
    with agent_rig(
        tmp_path, database_url=faults_database, mqtt_url=mqtt_url, meter=meter_link
    ) as running:
        running.start_collector()
        running.start_agent()
        yield running


def steady(meter: VirtualMeter) -> None:
    meter.power_w = lambda _now: 40.0


def stored_at_least(rig: AgentRig, count: int, timeout_s: float = 20) -> None:
    wait_for(lambda: len(rig.stored()) >= count, timeout_s, f"{count} stored events")


def unsent_at_least(rig: AgentRig, count: int, timeout_s: float = 20) -> None:
    wait_for(lambda: rig.outbox()[1] >= count, timeout_s, f"{count} events waiting in the outbox")


@pytest.mark.parametrize("rounds", [1, pytest.param(8, marks=pytest.mark.long)])
def test_kill_9_of_the_agent_mid_stream_loses_and_duplicates_nothing(
    rig: AgentRig, sim_meter: VirtualMeter, rounds: int
) -> None:
    rng = random.Random(rounds)
    for round_ in range(1, rounds + 1):
        stored_at_least(rig, 3 * round_)
        time.sleep(rng.uniform(0, 1.2))  # anywhere in the cycle: mid-poll, mid-send, mid-ack
        rig.kill_agent()
        rig.start_agent()
    wait_for(lambda: len(rig.boots_stored()) == rounds + 1, 20, "events of the last boot")
    events = rig.settle_and_verify(lambda: steady(sim_meter))
    assert len({event.boot for event in events}) == rounds + 1
    # Each restart begins unknown: the agent does not pretend to know the state it missed.
    assert sum(event.from_state is State.UNKNOWN for event in events) >= rounds + 1


@pytest.mark.parametrize("down_s", [3.0, pytest.param(150.0, marks=pytest.mark.long)])
def test_events_made_while_the_broker_is_down_arrive_once_it_is_back(
    rig: AgentRig, sim_meter: VirtualMeter, stack: DevStack, down_s: float
) -> None:
    stored_at_least(rig, 2)
    stack.stop_mosquitto()
    try:
        made_before, _ = rig.outbox()
        time.sleep(down_s)
        made, unsent = rig.outbox()
        assert made >= made_before + 2  # the agent kept measuring
        assert unsent >= 2  # and kept what it could not send
    finally:
        stack.start_mosquitto()
    stored_at_least(rig, made, timeout_s=60)
    events = rig.settle_and_verify(lambda: steady(sim_meter))
    assert len({event.boot for event in events}) == 1  # no restart was needed


@pytest.mark.parametrize("down_s", [3.0, pytest.param(90.0, marks=pytest.mark.long)])
def test_events_wait_in_the_outbox_while_the_collector_is_down(
    rig: AgentRig, sim_meter: VirtualMeter, down_s: float
) -> None:
    stored_at_least(rig, 2)
    rig.kill_collector()
    time.sleep(down_s)
    unsent_at_least(rig, 2)  # not acked: still on disk, whatever the broker holds
    rig.start_collector()
    events = rig.settle_and_verify(lambda: steady(sim_meter))
    assert len({event.boot for event in events}) == 1


@pytest.mark.parametrize("outages", [1, pytest.param(6, marks=pytest.mark.long)])
def test_an_unplugged_meter_is_unknown_never_off_and_is_picked_up_again(
    rig: AgentRig, sim_meter: VirtualMeter, outages: int
) -> None:
    for outage in range(outages):
        stored_at_least(rig, 2 + 4 * outage)
        sim_meter.fail = "no_reply"
        wait_for(
            lambda: any(e.to_state is State.UNKNOWN for e in rig.stored()[-2:]),
            20,
            "the unknown event",
        )
        sim_meter.fail = None
        wait_for(lambda: rig.stored()[-1].from_state is State.UNKNOWN, 20, "recovery")
    events = rig.settle_and_verify(lambda: steady(sim_meter))
    unknown = [event for event in events if event.to_state is State.UNKNOWN]
    assert len(unknown) == outages
    assert all(event.power_w is None for event in unknown)
    assert len({event.boot for event in events}) == 1  # recovered without a restart


def test_a_full_outbox_records_unknown_and_resumes_once_the_collector_drains_it(
    tmp_path: Path, faults_database: str, mqtt_url: str, sim_meter: VirtualMeter
) -> None:
    with (
        MeterServerThread({1: sim_meter}) as port,
        agent_rig(
            tmp_path,
            database_url=faults_database,
            mqtt_url=mqtt_url,
            meter={"host": "127.0.0.1", "port": port},
            outbox={"max_events": 6},
        ) as rig,
    ):
        rig.start_agent()  # no collector yet: nothing is acknowledged
        wait_for(lambda: rig.outbox() == (6, 6), 30, "the outbox to fill")
        time.sleep(1.5)  # two more cycles of the instrument: nothing more is stored
        assert rig.outbox() == (6, 6)
        rig.start_collector()  # its first resend (backing off since nothing was acked) is due
        wait_for(lambda: rig.outbox()[0] > 6, 60, "the agent to resume once acks made room")
        events = rig.settle_and_verify(lambda: steady(sim_meter))
    assert events[5].to_state is State.UNKNOWN  # the reserved slot
    assert events[6].from_state is State.UNKNOWN  # resumed once acks made room
    log = (tmp_path / "agent.log").read_text()
    assert '"level": "ERROR"' in log and "OUTBOX FULL" in log


@pytest.mark.parametrize("meter_link", ["rtu"], indirect=True)
def test_a_meter_garbling_its_crcs_on_the_rs485_line_stays_unknown_until_it_answers_cleanly(
    rig: AgentRig, sim_meter: VirtualMeter
) -> None:
    stored_at_least(rig, 3)
    sim_meter.fail = "no_reply"
    wait_for(lambda: rig.stored()[-1].to_state is State.UNKNOWN, 20, "the unknown event")
    sim_meter.fail = "corrupt"  # line noise: answers, but with bad CRCs
    time.sleep(1.5)
    assert rig.stored()[-1].to_state is State.UNKNOWN
    sim_meter.fail = None
    wait_for(lambda: rig.stored()[-1].from_state is State.UNKNOWN, 20, "recovery")
    events = rig.settle_and_verify(lambda: steady(sim_meter))
    assert len({event.boot for event in events}) == 1
    assert sum(event.to_state is State.UNKNOWN for event in events) == 1

"""The PC probe: combining power with the control software, and finding a real process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.config import parse_config
from agents.probe import ProcessProbe
from instrumetry.domain.classify import Classifier, Thresholds, Transition
from instrumetry.domain.combine import RunningIf, combine
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.states import State

OFF, STANDBY, RUNNING, UNKNOWN = State.OFF, State.STANDBY, State.RUNNING, State.UNKNOWN


@pytest.mark.parametrize(
    ("rule", "power", "process", "expected"),
    [
        (RunningIf.POWER, STANDBY, True, STANDBY),
        (RunningIf.PROCESS, STANDBY, True, RUNNING),
        (RunningIf.PROCESS, RUNNING, False, STANDBY),
        (RunningIf.POWER_OR_PROCESS, STANDBY, True, RUNNING),
        (RunningIf.POWER_OR_PROCESS, RUNNING, False, RUNNING),
        (RunningIf.POWER_AND_PROCESS, RUNNING, False, STANDBY),
        (RunningIf.POWER_AND_PROCESS, RUNNING, True, RUNNING),
        (RunningIf.POWER_AND_PROCESS, STANDBY, True, STANDBY),
    ],
)
def test_the_rule_decides_running(
    rule: RunningIf, power: State, process: bool, expected: State
) -> None:
    assert combine(power, process, rule) is expected


@given(
    rule=st.sampled_from(RunningIf),
    power=st.sampled_from(State),
    process=st.sampled_from([True, False, None]),
)
def test_off_unknown_and_an_unchecked_process_are_the_meters_word(
    rule: RunningIf, power: State, process: bool | None
) -> None:
    combined = combine(power, process, rule)
    if power in (OFF, UNKNOWN) or process is None or rule is RunningIf.POWER:
        assert combined is power
    else:
        assert combined in (STANDBY, RUNNING)  # the process never switches power on or off


def test_the_classifier_applies_the_rule_with_its_dwell() -> None:
    classifier = Classifier(Thresholds(min_dwell_s=10), running_if=RunningIf.PROCESS)
    assert classifier.step(0, 40.0, False) == Transition(0, UNKNOWN, STANDBY, 40.0)
    assert classifier.step(1_000, 40.0, True) is None  # dwell
    assert classifier.step(11_000, 40.0, True) == Transition(1_000, STANDBY, RUNNING, 40.0)
    assert classifier.step(12_000, 40.0, None) is None  # unchecked: stays for now
    assert classifier.step(30_000, 40.0, None) == Transition(12_000, RUNNING, STANDBY, 40.0)


def test_the_probe_sees_a_real_process_come_and_go(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    fake = tmp_path / "TopSpinFake"
    shutil.copy(sleep, fake)
    clock = [0.0]
    probe = ProcessProbe(["topspinfake"], interval_s=5, clock=lambda: clock[0])
    assert probe.running() is False
    process = subprocess.Popen([str(fake), "30"])
    try:
        assert probe.running() is False  # cached until the interval has passed
        clock[0] = 5
        assert probe.running() is True
    finally:
        process.kill()
        process.wait()
    clock[0] = 10
    assert probe.running() is False


def test_a_probe_section_needs_process_names_and_a_known_rule() -> None:
    base = {"instrument_id": "x", "broker": {"url": "mqtt://h"}, "meter": {"host": "m"}}
    config = parse_config(base | {"probe": {"processes": ["TopSpin.exe"]}}, "t")
    assert config.probe is not None and config.probe.running_if is RunningIf.PROCESS
    with pytest.raises(ConfigError, match=r"t: probe\.processes: Expected `array` of length >= 1"):
        parse_config(base | {"probe": {"processes": []}}, "t")
    with pytest.raises(ConfigError, match=r"t: probe\.running_if: Invalid enum value 'often'"):
        parse_config(base | {"probe": {"processes": ["a"], "running_if": "often"}}, "t")

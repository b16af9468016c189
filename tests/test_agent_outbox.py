"""The outbox keeps events and the chain head across restarts, and even across kill -9."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.outbox import RESERVE_BYTES, Outbox, OutboxFull
from agents.runner import AgentCore, Outlet
from instrumetry.domain import chain, wire
from instrumetry.domain.chain import ChainHead
from instrumetry.domain.classify import Classifier, Thresholds, Transition
from instrumetry.domain.states import State

KEY = Ed25519PrivateKey.generate()
CYCLE = [State.OFF, State.STANDBY, State.RUNNING]


def next_event(outbox: Outbox, n: int) -> wire.Event:
    transition = Transition(1_000 * n, CYCLE[n % 3], CYCLE[(n + 1) % 3], 40.0)
    event, _ = chain.append(
        outbox.head(), instrument="xrd-1", boot=outbox.boot, transition=transition, signer=KEY.sign
    )
    return event


def test_a_fresh_outbox_starts_the_chain(tmp_path: Path) -> None:
    with Outbox(tmp_path / "state") as outbox:
        assert outbox.head() == ChainHead(1, wire.GENESIS)
        assert outbox.pending(10) == []
        assert len(outbox.boot) == 32
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"


def test_seq_chain_head_and_pending_events_survive_a_reopen(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        events = []
        for n in range(3):
            events.append(next_event(outbox, n))
            head = outbox.add(events[-1])
        first_boot = outbox.boot
    assert head == ChainHead(4, wire.event_hash(events[-1]))

    with Outbox(tmp_path) as outbox:
        assert outbox.boot != first_boot  # a new process start is a new boot
        assert outbox.head() == head
        assert outbox.pending(10) == [(e.seq, wire.encode(e)) for e in events]
        after_restart = next_event(outbox, 3)
        assert after_restart.seq == 4
        assert after_restart.prev == wire.event_hash(events[-1])
        outbox.add(after_restart)


def test_ack_deletes_only_what_is_pending(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        for n in range(5):
            outbox.add(next_event(outbox, n))
        assert [seq for seq, _ in outbox.pending(2)] == [1, 2]
        assert [seq for seq, _ in outbox.pending(2, after=2)] == [3, 4]

        assert outbox.ack([2, 4, 99]) == 2
        assert [seq for seq, _ in outbox.pending(10)] == [1, 3, 5]
        assert outbox.ack([2]) == 0  # a repeated ack is harmless
        assert outbox.count() == 3
        assert outbox.head().next_seq == 6  # acks never move the chain


def test_an_event_that_does_not_continue_the_chain_is_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        first = next_event(outbox, 0)
        outbox.add(first)
        with pytest.raises(ValueError, match="seq 1 does not continue the chain at seq 2"):
            outbox.add(first)
        forged, _ = chain.append(
            ChainHead(2, "f" * 64),
            instrument="xrd-1",
            boot=outbox.boot,
            transition=Transition(5, State.OFF, State.STANDBY, 9.0),
            signer=KEY.sign,
        )
        with pytest.raises(ValueError, match="does not continue"):
            outbox.add(forged)
        assert outbox.count() == 1
        assert outbox.head() == ChainHead(2, wire.event_hash(first))


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from agents.outbox import Outbox
    from instrumetry.domain import chain
    from instrumetry.domain.classify import Transition
    from instrumetry.domain.states import State

    key = Ed25519PrivateKey.generate()
    outbox = Outbox(Path(sys.argv[1]))
    n = 0
    while True:
        transition = Transition(n, State.OFF, State.STANDBY, float(n))
        event, _ = chain.append(
            outbox.head(), instrument="xrd-1", boot=outbox.boot, transition=transition,
            signer=key.sign,
        )
        outbox.add(event)
        print(event.seq, flush=True)
        n += 1
    """
)


def test_kill_9_while_writing_never_loses_a_committed_event_nor_breaks_the_chain(
    tmp_path: Path,
) -> None:
    for _round in range(2):  # the second writer continues the first one's chain
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        committed = [int(writer.stdout.readline()) for _ in range(50)]
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()

        with Outbox(tmp_path) as outbox:
            stored = [wire.decode(wire.Event, payload) for _, payload in outbox.pending(10**6)]
            head = outbox.head()
        seqs = [event.seq for event in stored]
        assert set(committed) <= set(seqs)
        assert seqs == list(range(1, len(seqs) + 1))
        assert stored[0].prev == wire.GENESIS
        for earlier, later in itertools.pairwise(stored):
            assert later.prev == wire.event_hash(earlier)
        assert head == ChainHead(seqs[-1] + 1, wire.event_hash(stored[-1]))


class Sink:
    """An outlet that keeps heartbeats; sending events is the publisher's job, tested elsewhere."""

    def __init__(self) -> None:
        self.heartbeats: list[wire.Heartbeat] = []

    def pump(self, wait_s: float = 0.0) -> bool:
        return False

    def send_heartbeat(self, heartbeat: wire.Heartbeat) -> None:
        self.heartbeats.append(heartbeat)


def core_for(
    outbox: Outbox,
    outlet: Outlet,
    signer: Callable[[bytes], bytes] = KEY.sign,
    heartbeat_interval_s: float = 1,
) -> AgentCore:
    return AgentCore(
        instrument="xrd-1",
        outbox=outbox,
        classifier=Classifier(Thresholds(min_dwell_s=0)),
        signer=signer,
        outlet=outlet,
        heartbeat_interval_s=heartbeat_interval_s,
    )


def stored_events(outbox: Outbox) -> list[wire.Event]:
    return [wire.decode(wire.Event, payload) for _, payload in outbox.pending(10**6)]


def test_a_full_outbox_records_unknown_pauses_loudly_and_resumes_when_acked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    with Outbox(tmp_path, max_events=4) as outbox:
        core = core_for(outbox, sink)
        for second, watts in enumerate([0.0, 40.0, 900.0]):  # unknown->off->standby->running
            core.on_reading(second * 1000, watts)
        assert outbox.full and outbox.count() == 3

        with caplog.at_level(logging.ERROR):
            for second, watts in enumerate([0.0, 40.0, 0.0, 900.0], start=3):
                core.on_reading(second * 1000, watts)
        assert [(e.seq, e.to_state, e.t) for e in stored_events(outbox)][-1] == (
            4,
            State.UNKNOWN,
            3000,
        )
        assert outbox.count() == 4  # the reserve is used, nothing else was stored or dropped
        assert sink.heartbeats[-1].state is State.UNKNOWN  # heartbeats show it too
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("OUTBOX FULL: 3 events")

        core.on_reading(AgentCore.FULL_REMINDER_MS + 3000, 0.0)
        assert "OUTBOX STILL FULL for 10 min" in caplog.records[-1].getMessage()

        outbox.ack([1, 2])
        core.on_reading(AgentCore.FULL_REMINDER_MS + 4000, 40.0)
        events = stored_events(outbox)
        assert [(e.seq, e.from_state, e.to_state) for e in events] == [
            (3, State.STANDBY, State.RUNNING),
            (4, State.RUNNING, State.UNKNOWN),
            (5, State.UNKNOWN, State.STANDBY),
        ]
        for earlier, later in itertools.pairwise(events):
            assert later.prev == wire.event_hash(earlier)


def test_the_byte_bound_counts_payloads_and_survives_a_reopen(tmp_path: Path) -> None:
    with Outbox(tmp_path, max_bytes=65_536) as outbox:
        n = 0
        while not outbox.full:
            outbox.add(next_event(outbox, n))
            n += 1
        size, count = outbox.size(), outbox.count()
        assert 65_536 - RESERVE_BYTES < size <= 65_536 - RESERVE_BYTES + 1000
        assert size == sum(len(payload) for _, payload in outbox.pending(10**6))
    with Outbox(tmp_path, max_bytes=65_536) as outbox:
        assert (outbox.size(), outbox.count(), outbox.full) == (size, count, True)
        outbox.add(next_event(outbox, n))  # the reserve still takes the last event
        outbox.ack([1, 2, 3])
        assert outbox.count() == count - 2
        assert not outbox.full


def test_adding_past_the_bound_is_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path, max_events=2) as outbox:
        outbox.add(next_event(outbox, 0))
        assert outbox.full
        outbox.add(next_event(outbox, 1))
        with pytest.raises(OutboxFull, match=r"outbox full: 2 events, \d+ bytes \(max 2 events"):
            outbox.add(next_event(outbox, 2))
        assert outbox.head().next_seq == 3


class Witness:
    """An outlet that looks into the outbox file, from outside, whenever anything goes out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[str, int]] = []  # (what went out, events committed by then)
        self.heartbeats: list[wire.Heartbeat] = []

    def _committed(self) -> int:
        with contextlib.closing(sqlite3.connect(self.path / "outbox.sqlite3")) as other:
            count: int = other.execute("SELECT count(*) FROM events").fetchone()[0]
        return count

    def pump(self, wait_s: float = 0.0) -> bool:
        self.seen.append(("pump", self._committed()))
        return False

    def send_heartbeat(self, heartbeat: wire.Heartbeat) -> None:
        self.seen.append(("heartbeat", self._committed()))
        self.heartbeats.append(heartbeat)


def test_a_step_of_readings_is_committed_in_one_transaction_before_anything_goes_out(
    tmp_path: Path,
) -> None:
    witness = Witness(tmp_path)
    with Outbox(tmp_path) as outbox:
        core = core_for(outbox, witness)
        # unknown->off, off->standby, a heartbeat falls due, standby->running: one step.
        core.on_readings([(0, 0.0, None), (1000, 40.0, None), (2000, 900.0, None)])
        assert [(e.seq, e.to_state) for e in stored_events(outbox)] == [
            (1, State.OFF),
            (2, State.STANDBY),
            (3, State.RUNNING),
        ]
        # Sent only after the commit: one pump, then the heartbeats that fell due meanwhile.
        assert witness.seen == [("pump", 3), ("heartbeat", 3), ("heartbeat", 3)]
        assert [h.t for h in witness.heartbeats] == [1000, 2000]
        core.on_readings([(3000, 900.0, None)])  # no transition: nothing to pump
        assert witness.seen[-1] == ("heartbeat", 3)


def test_a_failing_step_stores_none_of_its_events_and_the_chain_goes_on(tmp_path: Path) -> None:
    signed: list[bytes] = []

    def flaky_signer(data: bytes) -> bytes:
        signed.append(data)
        if len(signed) == 2:
            raise OSError("the key's token was unplugged")
        return KEY.sign(data)

    sink = Sink()
    with Outbox(tmp_path) as outbox:
        core = core_for(outbox, sink, flaky_signer, heartbeat_interval_s=60)
        with pytest.raises(OSError, match="unplugged"):
            core.on_readings([(0, 0.0, None), (1000, 40.0, None)])
        assert (outbox.count(), outbox.last_seq, outbox.head()) == (0, 0, ChainHead())
        core.on_readings([(2000, 900.0, None)])  # standby -> running: the chain starts at seq 1
        assert [(e.seq, e.prev) for e in stored_events(outbox)] == [(1, wire.GENESIS)]
    with Outbox(tmp_path) as reopened:
        assert reopened.count() == 1 and reopened.last_seq == 1


def test_an_outbox_batch_that_adds_nothing_leaves_no_transaction(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        with outbox.batch():
            pass
        with pytest.raises(RuntimeError, match="nest"), outbox.batch(), outbox.batch():
            pass
        outbox.add(next_event(outbox, 0))  # a lone add commits on its own
    with Outbox(tmp_path) as reopened:
        assert reopened.count() == 1

"""The outbox keeps events and the chain head across restarts, and even across kill -9."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.outbox import Outbox
from instrumetry.domain import chain, wire
from instrumetry.domain.chain import ChainHead
from instrumetry.domain.classify import Transition
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

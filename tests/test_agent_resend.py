"""When the agent sends an unacknowledged event again (``agents.publisher.Resend``)."""

from __future__ import annotations

from agents.publisher import Resend


def clock(timeout_s: float = 60.0, now: float = 0.0) -> Resend:
    resend = Resend(timeout_s)
    resend.restart(now)
    return resend


def test_a_backlog_acknowledged_in_order_is_never_sent_twice() -> None:
    """The collector is busy: every ack comes minutes late, but they keep coming, in order."""
    resend = clock()
    sent = {seq: 0.0 for seq in range(1, 301)}  # 300 events sent at once
    for tick in range(1, 301):  # one ack a second, each event older than the timeout by then
        now = float(tick)
        resend.acked(now, sent.pop(tick))
        assert resend.due(sent, now) == []


def test_an_event_overtaken_by_acks_is_late_once_it_waited_the_timeout() -> None:
    resend = clock()
    sent = {1: 0.0, 2: 1.0, 3: 2.0}
    resend.acked(5.0, sent.pop(2))  # 1 was lost on the way; 3 is still under way
    assert resend.due(sent, 30.0) == []
    assert resend.due(sent, 60.0) == [1]


def test_without_any_ack_resends_back_off_to_the_cap() -> None:
    """A collector outage: resends after 60 s, then 120, 240, ... at most once an hour."""
    resend = clock()
    sent = {1: 0.0}
    resent_at = []
    now = 0.0
    while now < 86_400:
        now += 1.0
        if resend.due(sent, now):
            resent_at.append(now)
            sent = {1: now}
    gaps = [b - a for a, b in zip([0.0, *resent_at], resent_at, strict=False)]
    assert gaps[:7] == [60, 120, 240, 480, 960, 1920, 3600]
    assert set(gaps[7:]) == {3600}
    assert len(resent_at) < 30  # a fixed 60 s timeout would have resent 1,440 times


def test_an_ack_or_a_reconnect_resets_the_patience() -> None:
    resend = clock()
    sent = {1: 0.0, 2: 0.0}
    assert resend.due(sent, 60.0) == [1, 2]
    sent = {1: 60.0, 2: 61.0}
    assert resend.due(sent, 150.0) == []  # patience is 120 s now
    resend.acked(150.0, sent.pop(2))
    assert resend.patience_s == 60.0
    assert resend.due(sent, 200.0) == [1]  # overtaken by 2's ack, and over 60 s old
    resend.restart(300.0)
    assert resend.patience_s == 60.0
    assert resend.acked_up_to == float("-inf")

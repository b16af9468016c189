"""Two collectors storing one stream at once store what one collector stores alone.

A shared subscription deals each collector every other message, so both
store batches of the same instruments at the same time, on their own
connections. Chain verdicts, settled gaps, intervals, daily rollups,
liveness and ``last_seen`` must come out the same whatever the interleaving:
the scripted stream of ``test_collector_batching`` is stored by one
collector, then dealt round-robin to two threads storing concurrently into
another database, and every table the collector writes must be equal.

One known exception: an offline period's end. Liveness follows messages in
arrival order (``instrumetry.domain.liveness.follow``), and two collectors
have none between them: a period opened by a Last Will ends at the first
message of the next boot to be committed, which may be the boot's first
event rather than its ``online`` status (intervals are the same: they end
the period at the new boot's first event either way). A Will committed
after the next boot's first messages still records its period.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from collector.ingest import Parsed, parse_message
from collector.store import store
from collector.verify import EnrolledKeys
from tests.test_collector_batching import TABLES, contents, register, stream

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

COLLECTORS = 2
BATCH = 29
"""Small batches: many transactions, so the two collectors' overlap in time often."""


def collect(
    url: str, share: list[Parsed], start: threading.Barrier, failures: list[BaseException]
) -> None:
    """One collector: its own connection and key cache, its share stored batch by batch."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            keys = EnrolledKeys()
            start.wait()
            for first in range(0, len(share), BATCH):
                store(conn, share[first : first + BATCH], keys)
    except BaseException as error:  # reported by the test, not lost in the thread
        failures.append(error)
        start.abort()


@pytest.fixture(scope="module")
def stored(make_database: MakeDatabase) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The tables after one collector stored the stream, and after two stored it at once."""
    arrivals, enrolled = stream(random.Random(7))
    parsed: list[Parsed] = [parse_message(*message) for message in arrivals]
    with make_database("test_alone") as alone, make_database("test_shared") as shared:
        with psycopg.connect(alone, autocommit=True) as conn:
            register(conn, enrolled)
            keys = EnrolledKeys()
            for first in range(0, len(parsed), BATCH):
                store(conn, parsed[first : first + BATCH], keys)
        with psycopg.connect(shared, autocommit=True) as conn:
            register(conn, enrolled)
        start = threading.Barrier(COLLECTORS)
        failures: list[BaseException] = []
        threads = [
            threading.Thread(target=collect, args=(shared, parsed[n::COLLECTORS], start, failures))
            for n in range(COLLECTORS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        yield contents(alone), contents(shared)


def test_two_collectors_at_once_store_what_one_stores(
    stored: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    alone, shared = stored
    for table in TABLES.keys() - {"offline_periods"}:
        assert shared[table] == alone[table], table
    assert [_opened(period) for period in shared["offline_periods"]] == [
        _opened(period) for period in alone["offline_periods"]
    ]


def _opened(period: tuple[Any, ...]) -> tuple[Any, ...]:
    """An offline period without its end: (instrument, start, reason, boot)."""
    instrument_id, start, _end, reason, boot, _resumed = period
    return instrument_id, start, reason, boot

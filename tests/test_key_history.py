"""Re-enrolling an agent retires its key instead of forgetting it.

A reinstalled instrument PC gets a new key; the events its old key signed
must stay verifiable (by the collector for an old outbox drained late, by the
auditor for the whole history), and the old key must verify nothing dated
after its retirement.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from api.auth import Role
from api.registry import upsert_agents, upsert_institutions, upsert_instruments
from collector.ingest import EventRow, Received
from collector.verify import EnrolledKeys
from instrumetry.domain import audit, chain, wire
from instrumetry.domain.audit import Verification
from instrumetry.domain.classify import Transition
from instrumetry.domain.registry import Agent, Institution, Instrument
from instrumetry.domain.states import State
from tests.api_support import issue_token, serve
from tests.conftest import MakeDatabase
from tests.test_api_orders_audit import store_events
from tests.test_chain_audit import BOOT, KEY, OTHER, T0, events, raw

pytestmark = pytest.mark.anyio


@pytest.fixture
def database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_key_history") as url:
        with psycopg.connect(url) as conn:
            upsert_institutions(conn, [Institution("sh-univ", "上海大学")])
            upsert_instruments(conn, [Instrument("nmr-1", "sh-univ", "核磁共振波谱仪")])
            upsert_agents(conn, [Agent("agent-nmr", "nmr-1", raw(KEY))])
        yield url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(database, issue_token(database, Role.ADMIN)) as api:
        yield api


def history(conn: psycopg.Connection[Any]) -> list[tuple[str, bytes, bool]]:
    rows = conn.execute(
        "SELECT agent_id, public_key, retired_at IS NOT NULL FROM agent_keys ORDER BY id"
    ).fetchall()
    return [(agent, bytes(key), retired) for agent, key, retired in rows]


def test_the_registry_keeps_every_key_it_ever_enrolled(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        assert history(conn) == [("agent-nmr", raw(KEY), False)]
        upsert_agents(conn, [Agent("agent-nmr", "nmr-1", raw(KEY))])  # the same key: no change
        assert history(conn) == [("agent-nmr", raw(KEY), False)]
        upsert_agents(conn, [Agent("agent-nmr", "nmr-1", raw(OTHER))])
        assert history(conn) == [("agent-nmr", raw(KEY), True), ("agent-nmr", raw(OTHER), False)]
        conn.execute("DELETE FROM agents WHERE id = 'agent-nmr'")
        assert history(conn) == [("agent-nmr", raw(KEY), True), ("agent-nmr", raw(OTHER), True)]


def row(event: wire.Event) -> EventRow:
    when = audit.utc_time(event.t)
    signature = wire.signature_bytes(event)
    return EventRow(Received("t", b"", when), event, when, signature, uuid.UUID(hex=event.boot))


def signed_at(t_ms: int, seq: int, key: Any) -> wire.Event:
    transition = Transition(t_ms, State.OFF, State.STANDBY, 5.0)
    head = chain.ChainHead(next_seq=seq, prev="1" * 64)
    event, _ = chain.append(
        head, instrument="nmr-1", boot=BOOT, transition=transition, signer=key.sign
    )
    return event


def test_the_collector_accepts_an_old_outbox_after_re_enrolment(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        upsert_agents(conn, [Agent("agent-nmr", "nmr-1", raw(OTHER))])  # a reinstalled PC
        (retired,) = conn.execute(
            "SELECT retired_at FROM agent_keys WHERE retired_at IS NOT NULL"
        ).fetchone()  # type: ignore[misc]
        before = signed_at(T0, 7, KEY)  # still in the old outbox
        after = signed_at(audit.epoch_ms(retired) + 1_000, 8, KEY)  # the old key, used later
        new = signed_at(audit.epoch_ms(retired) + 2_000, 1, OTHER)
        verdicts = EnrolledKeys().signatures(conn, [row(before), row(after), row(new)])
    assert verdicts == [Verification.OK, Verification.BAD_SIGNATURE, Verification.OK]


async def test_the_audit_still_verifies_history_signed_before_a_re_enrolment(
    database: str, client: httpx.AsyncClient
) -> None:
    with psycopg.connect(database) as conn:
        store_events(conn, events(6))  # 2026-03-02, signed with KEY
    new_key = base64.b64encode(raw(OTHER)).decode()
    response = await client.put(
        "/api/v1/agents/agent-nmr", json={"instrument_id": "nmr-1", "public_key": new_key}
    )
    assert response.status_code == 200, response.text
    body = (
        await client.get(
            "/api/v1/audit/instruments/nmr-1/chain",
            params={"from": "2026-03-02T00:00:00Z", "to": "2026-03-03T00:00:00Z"},
        )
    ).json()
    assert body["ok"], body
    keys = [(k["public_key"], k["retired_at"] is not None) for k in body["keys"]]
    assert keys == [(base64.b64encode(raw(KEY)).decode(), True), (new_key, False)]
    retired_at = datetime.fromisoformat(body["keys"][0]["retired_at"])
    assert retired_at > datetime(2026, 3, 3, tzinfo=UTC)

"""Audit evidence: verifying an instrument's signed event chain, and exporting it.

The export lets an auditor verify offline with the published public keys,
without trusting the platform or its database (docs/AUDIT.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse

from api import audit, periods, problems
from api.audit_models import ChainAudit
from api.deps import Conn, CurrentPrincipal, ReadAccess
from instrumetry.domain.chain_export import export_lines

router = APIRouter(
    prefix="/api/v1/audit",
    tags=["audit"],
    dependencies=[ReadAccess],
    responses=problems.responses(401, 403, 422),
)

InstrumentId = Annotated[str, Path(min_length=1, max_length=64, description="The instrument id.")]
From = Annotated[
    periods.Bound,
    Query(alias="from", description="Date (local day of the institution) or RFC 3339 instant."),
]
To = Annotated[
    periods.Bound,
    Query(alias="to", description="Date (inclusive) or RFC 3339 instant (exclusive)."),
]
_CHECKS = (
    "Events whose device time falls in [from, to), sorted by seq: each signature is checked "
    "with the Ed25519 keys enrolled for the instrument (`bad_signatures`: altered or forged; "
    "`foreign`: signed by another instrument's agent); each `prev` must be the SHA-256 of the "
    "previous event's canonical encoding (`breaks`); seqs must follow each other by one "
    "(`gaps`: events missing) and never repeat with other content (`duplicates`). The first "
    "event is linked to the event before the period when it is stored (`anchored`)."
)


@router.get(
    "/instruments/{instrument_id}/chain",
    summary="Verify the signatures and hash chain of an instrument's events",
    description=_CHECKS,
    responses=problems.responses(404, 422, 503),
)
async def verify_chain(
    conn: Conn, principal: CurrentPrincipal, instrument_id: InstrumentId, start: From, end: To
) -> ChainAudit:
    periods.check(start, end)
    evidence = await audit.load_chain(conn, instrument_id, start, end, principal.scope)
    if evidence is None:
        raise HTTPException(404, f"no instrument has id {instrument_id!r}")
    return ChainAudit.of(evidence, await audit.verify(conn, evidence))


@router.get(
    "/instruments/{instrument_id}/export",
    summary="Export an instrument's events exactly as signed, with its public keys",
    description=(
        "JSON lines: a header (format, instrument, period, the enrolled public keys, the "
        "anchor's seq), then every event in its wire form (docs/PROTOCOL.md) in seq order, "
        "the anchor first. Verify it offline with `instrumetry audit verify-export FILE` or "
        "the standalone script in docs/AUDIT.md."
    ),
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "The export."},
        **problems.responses(404, 422, 503),
    },
)
async def export_chain(
    conn: Conn, principal: CurrentPrincipal, instrument_id: InstrumentId, start: From, end: To
) -> StreamingResponse:
    periods.check(start, end)
    evidence = await audit.load_chain(conn, instrument_id, start, end, principal.scope)
    if evidence is None:
        raise HTTPException(404, f"no instrument has id {instrument_id!r}")
    lines = export_lines(
        evidence.instrument_id, evidence.period, evidence.keys, evidence.anchor, evidence.events
    )
    filename = f"{instrument_id}-chain.jsonl"
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )

"""Instruments: the registry's CRUD and the CSV import of a platform's instrument list."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import JSONResponse

from api import csv_import, problems
from api.deps import AdminAccess, Conn, CurrentPrincipal, ReadAccess, check_institution
from api.pagination import IdFilter, Limit, Offset, Search
from api.registry_models import (
    ID_PATTERN,
    ImportResult,
    Instrument,
    InstrumentCreate,
    InstrumentFields,
    Page,
)
from api.store import instruments as store
from instrumetry.domain.registry import Category

router = APIRouter(
    prefix="/api/v1/instruments",
    tags=["registry"],
    dependencies=[ReadAccess],
    responses=problems.responses(400, 401, 403, 422, 503),
)
InstrumentId = Path(pattern=ID_PATTERN, description="The instrument's id.")

_CSV_HELP = (
    "A UTF-8 CSV file (a BOM is allowed) with a header row. Columns: "
    + ", ".join(f"`{c}`" for c in csv_import.COLUMNS)
    + "; `id`, `institution_id` and `name` are required, an empty cell takes the default. "
    "**All or nothing**: a file with any bad row changes nothing, and the 422 answer lists "
    "every mistake with its row (the header is row 1), column and message. Idempotent on "
    "the instrument id: a known id is updated in place, and importing the same file again "
    "reports every row unchanged."
)


@router.get("", summary="List instruments, filtered and paginated")
async def list_instruments(
    *,
    conn: Conn,
    principal: CurrentPrincipal,
    institution: IdFilter = None,
    category: Category | None = None,
    q: Search = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[Instrument]:
    """`q` matches the id, name, model or location. An institution's token sees its own only."""
    if institution is not None:
        check_institution(principal, institution)
    return await store.page(
        conn,
        scope=principal.scope,
        institution=institution,
        category=category,
        q=q,
        limit=limit,
        offset=offset,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminAccess],
    summary="Register an instrument",
    responses=problems.responses(409),
)
async def create_instrument(conn: Conn, body: InstrumentCreate) -> Instrument:
    return await store.create(conn, body)


@router.post(
    "/import",
    response_model=ImportResult,  # a rejected file is answered with a CsvProblem response
    dependencies=[AdminAccess],
    summary="Import an instrument list from CSV (all or nothing, idempotent)",
    description=_CSV_HELP,
    responses={422: {"model": csv_import.CsvProblem, "description": "Unprocessable Content"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def import_instruments(conn: Conn, request: Request) -> ImportResult | JSONResponse:
    data = bytearray()
    async for chunk in request.stream():  # stop reading past the limit: never hold a huge body
        data += chunk
        if len(data) > csv_import.MAX_BYTES:
            break
    known = await store.institution_ids(conn)
    try:
        rows = csv_import.parse_instruments(bytes(data), known)
    except csv_import.CsvRejected as rejected:
        first = rejected.errors[0]
        column = f", column {first.column}" if first.column else ""
        more = f" (and {len(rejected.errors) - 1} more)" if len(rejected.errors) > 1 else ""
        body = csv_import.CsvProblem(
            title="Unprocessable Content",
            status=422,
            detail=f"row {first.row}{column}: {first.message}{more}; nothing was imported",
            instance=request.url.path,
            rows=rejected.errors,
        )
        content = body.model_dump(exclude_none=True)
        content["rows"] = [error.model_dump() for error in rejected.errors]  # keep null columns
        return JSONResponse(content, status_code=422, media_type=problems.MEDIA_TYPE)
    return await store.upsert_all(conn, rows)


@router.get("/{instrument_id}", summary="One instrument", responses=problems.responses(404))
async def get_instrument(
    conn: Conn, principal: CurrentPrincipal, instrument_id: str = InstrumentId
) -> Instrument:
    found = await store.get(conn, instrument_id)
    check_institution(principal, found.institution_id)
    return found


@router.put(
    "/{instrument_id}",
    dependencies=[AdminAccess],
    summary="Replace an instrument's registry entry",
    responses=problems.responses(404),
)
async def replace_instrument(
    conn: Conn, body: InstrumentFields, instrument_id: str = InstrumentId
) -> Instrument:
    return await store.replace(conn, instrument_id, body)


@router.delete(
    "/{instrument_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminAccess],
    summary="Delete an instrument that has no agents and no measured data",
    responses=problems.responses(404, 409),
)
async def delete_instrument(conn: Conn, instrument_id: str = InstrumentId) -> None:
    await store.delete(conn, instrument_id)

"""Parsing an instrument list from CSV, with every mistake named by row and column.

The import is all or nothing: a file with any bad row changes nothing and the
answer lists every bad row, so the sender fixes the file and sends it again
(imports are idempotent on the instrument id, so a resend is always safe).
Accepting the good rows of a bad file would leave the registry half-updated
with no record of which half.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection

from pydantic import BaseModel, Field, ValidationError

from api.problems import Problem
from api.registry_models import InstrumentCreate

MAX_BYTES = 5_000_000
MAX_ROWS = 20_000
REQUIRED = ("id", "institution_id", "name")
COLUMNS = tuple(InstrumentCreate.model_fields)


class RowError(BaseModel):
    """One mistake in the file."""

    row: int = Field(description="Line of the file; the header is row 1.")
    column: str | None = Field(description="The column, if the mistake is in one cell.")
    message: str


class CsvProblem(Problem):
    """A rejected import: nothing was stored; ``rows`` lists every mistake."""

    rows: list[RowError] = Field(description="Every mistake found, in file order.")


class CsvRejected(Exception):
    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} mistake(s) in the CSV file")
        self.errors = errors


def parse_instruments(data: bytes, institutions: Collection[str]) -> list[InstrumentCreate]:
    """Every row as an instrument, or ``CsvRejected`` with all mistakes of the file.

    Empty cells take the field's default. ``institutions`` are the ids that
    exist; a row naming another one is a mistake of that row.
    """
    if len(data) > MAX_BYTES:
        raise CsvRejected([RowError(row=1, column=None, message="file over 5 MB; split it")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise CsvRejected(
            [RowError(row=line, column=None, message="not UTF-8 (save the file as UTF-8)")]
        ) from None
    if "\x00" in text:
        raise CsvRejected([RowError(row=1, column=None, message="contains NUL characters")])
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(reader, [])]
    _check_header(header)
    errors: list[RowError] = []
    instruments: list[InstrumentCreate] = []
    first_row: dict[str, int] = {}
    try:
        for cells in reader:
            row = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(instruments) + len(errors) >= MAX_ROWS:
                errors.append(RowError(row=row, column=None, message="over 20,000 rows; split it"))
                break
            instrument = _row(
                row,
                header=header,
                cells=cells,
                institutions=institutions,
                first_row=first_row,
                errors=errors,
            )
            if instrument is not None:
                instruments.append(instrument)
    except csv.Error as error:
        errors.append(RowError(row=reader.line_num, column=None, message=f"bad CSV: {error}"))
    if errors:
        raise CsvRejected(errors)
    return instruments


def _check_header(header: list[str]) -> None:
    errors = [
        RowError(row=1, column=name or None, message=f"unknown column; known: {', '.join(COLUMNS)}")
        for name in header
        if name not in COLUMNS
    ]
    errors += [
        RowError(row=1, column=name, message="required column missing")
        for name in REQUIRED
        if name not in header
    ]
    duplicates = sorted({name for name in header if header.count(name) > 1})
    errors += [RowError(row=1, column=name, message="column given twice") for name in duplicates]
    if errors:
        raise CsvRejected(errors)


def _row(
    row: int,
    *,
    header: list[str],
    cells: list[str],
    institutions: Collection[str],
    first_row: dict[str, int],
    errors: list[RowError],
) -> InstrumentCreate | None:
    if len(cells) != len(header):
        errors.append(
            RowError(row=row, column=None, message=f"{len(cells)} cells, header has {len(header)}")
        )
        return None
    values = {name: cell.strip() for name, cell in zip(header, cells, strict=True) if cell.strip()}
    try:
        instrument = InstrumentCreate.model_validate(values)
    except ValidationError as error:
        for problem in error.errors():
            column = str(problem["loc"][0]) if problem["loc"] else None
            message = str(problem["msg"]).removeprefix("Value error, ")
            errors.append(RowError(row=row, column=column, message=message))
        return None
    if instrument.institution_id not in institutions:
        errors.append(
            RowError(
                row=row,
                column="institution_id",
                message=f"no institution has id {instrument.institution_id!r}",
            )
        )
        return None
    if instrument.id in first_row:
        errors.append(
            RowError(
                row=row,
                column="id",
                message=f"instrument id repeats row {first_row[instrument.id]}",
            )
        )
        return None
    first_row[instrument.id] = row
    return instrument

"""Response bodies of service orders and their reconciliation."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.orders import ImportResult, StoredOrder
from instrumetry.domain.reconcile import Flag, Reconciliation, Tolerances

FLAG_DEFINITIONS = {
    Flag.INFLATED: "billed hours > |E ∩ [s, e]| × inflation_factor + inflation_slack_h",
    Flag.PHANTOM: "ON ∩ [s, e] = ∅ while coverage of [s, e] ≥ min_coverage",
    Flag.DOUBLE_BILLED: "another order on the same instrument overlaps [s, e] by > max_overlap_min",
    Flag.UNVERIFIABLE: "coverage of [s, e] < min_coverage: too little measured to judge",
}


class RowProblem(BaseModel):
    """One problem of one imported row."""

    row: int = Field(description="CSV line number (header = 1) or 1-based JSON array position.")
    field: str = Field(description="The field at fault; empty when the whole row is.")
    message: str


class ImportReport(BaseModel):
    """What an import stored; rows with problems were skipped, the others stored."""

    received: int = Field(description="Rows in the file.")
    inserted: int = Field(description="New orders stored.")
    updated: int = Field(description="Known orders whose content changed.")
    unchanged: int = Field(description="Known orders imported again as they were.")
    rejected_rows: int = Field(description="Rows not stored; see `errors`.")
    errors: list[RowProblem]

    @classmethod
    def of(cls, result: ImportResult) -> ImportReport:
        return cls(
            received=result.received,
            inserted=result.inserted,
            updated=result.updated,
            unchanged=result.unchanged,
            rejected_rows=result.rejected_rows,
            errors=[RowProblem(row=e.row, field=e.field, message=e.message) for e in result.errors],
        )


class ServiceOrderOut(BaseModel):
    order_id: str
    instrument_id: str
    institution_id: str
    customer_org: str
    external: bool = Field(description="Service to an outside organisation (对外服务).")
    purpose: str
    starts_at: datetime = Field(description="s: start of the booked window.")
    ends_at: datetime = Field(description="e: end of the booked window.")
    billed_hours: float
    amount_yuan: float
    imported_at: datetime

    @classmethod
    def of(cls, stored: StoredOrder) -> ServiceOrderOut:
        o = stored.order
        return cls(
            order_id=o.order_id,
            instrument_id=o.instrument_id,
            institution_id=stored.institution_id,
            customer_org=o.customer_org,
            external=o.external,
            purpose=o.purpose,
            starts_at=o.starts_at,
            ends_at=o.ends_at,
            billed_hours=float(o.billed_hours),
            amount_yuan=float(o.amount_yuan),
            imported_at=stored.imported_at,
        )


class MeasuredInterval(BaseModel):
    state: str
    start: datetime
    end: datetime


class OverlapOut(BaseModel):
    order_id: str
    hours: float = Field(description="Length of the overlap of the two booked windows.")


class EvidenceOut(BaseModel):
    """What was measured in the order's window [s, e]."""

    window_h: float = Field(description="|[s, e]|.")
    on_h: float = Field(description="|ON ∩ [s, e]|.")
    effective_h: float = Field(description="|E ∩ [s, e]| (effective working hours).")
    unknown_h: float = Field(description="|UNK ∩ [s, e]|: time without measurements.")
    coverage: float = Field(description="1 − |UNK ∩ [s, e]| / |[s, e]|.")
    intervals: list[MeasuredInterval] = Field(
        description="Measured intervals clipped to the window; time they leave out is unknown."
    )
    overlaps: list[OverlapOut] = Field(description="Other orders on the instrument overlapping.")


class TolerancesOut(BaseModel):
    inflation_factor: float
    inflation_slack_h: float
    min_coverage: float
    max_overlap_min: float

    @classmethod
    def of(cls, tolerances: Tolerances) -> TolerancesOut:
        return cls(
            inflation_factor=tolerances.inflation_factor,
            inflation_slack_h=tolerances.inflation_slack_h,
            min_coverage=tolerances.min_coverage,
            max_overlap_min=tolerances.max_overlap.total_seconds() / 60,
        )


class OrderReconciliation(BaseModel):
    order: ServiceOrderOut
    flags: list[Flag]
    evidence: EvidenceOut

    @classmethod
    def of(cls, stored: StoredOrder, result: Reconciliation) -> OrderReconciliation:
        e = result.evidence
        return cls(
            order=ServiceOrderOut.of(stored),
            flags=result.flags,
            evidence=EvidenceOut(
                window_h=e.window_h,
                on_h=e.on_h,
                effective_h=e.effective_h,
                unknown_h=e.unknown_h,
                coverage=e.coverage,
                intervals=[
                    MeasuredInterval(state=i.state.value, start=i.start, end=i.end)
                    for i in e.intervals
                ],
                overlaps=[OverlapOut(order_id=o.order_id, hours=o.hours) for o in e.overlaps],
            ),
        )


class ReconciliationReport(BaseModel):
    """Reconciled orders with the tolerances and flag definitions they were judged by."""

    tolerances: TolerancesOut
    flag_definitions: dict[Flag, str]
    flag_counts: dict[Flag, int] = Field(description="Over all matching orders, not this page.")
    total: int = Field(description="Matching orders (after the flag filter).")
    limit: int
    offset: int
    items: list[OrderReconciliation]

"""The metric definitions of DESIGN.md, as the API documents and reports them.

The definitions are part of the product: a startup rate means nothing to an
auditor without the formula behind it, so the OpenAPI description and every
report carry the same text, from here.
"""

from __future__ import annotations

from typing import NamedTuple


class Definition(NamedTuple):
    name: str
    formula: str
    meaning: str


SETS = (
    "For an instrument and a period P: ON = standby ∪ running, RUN = running, UNK = unknown, "
    "W = the working windows of the institution's calendar (local days, daylight-saving safe), "
    "|X| = the length of a set of time X."
)

METRICS = (
    Definition("scheduled_h", "|W ∩ P|", "Working hours in the period."),
    Definition(
        "startup_rate",
        "|ON ∩ W ∩ P| / |W ∩ P|",
        "Share of the working hours during which the instrument was powered on.",
    ),
    Definition(
        "days_on_share",
        "working days in P with ON ≠ ∅ / working days in P",
        "Share of working days on which the instrument was on at any time of the local day.",
    ),
    Definition(
        "utilisation",
        "|RUN ∩ W ∩ P| / |W ∩ P|",
        "Share of the working hours during which the instrument was measuring.",
    ),
    Definition(
        "effective_h",
        "|E ∩ P|, E = ON ∩ ⋃ over runs [a, b] of [a − prep, b + post]",
        "Effective working hours (有效工作机时): running time plus the powered-on time "
        "around each run that serves as preparation and post-processing "
        "(prep = post = 30 min). Day and night count alike.",
    ),
    Definition(
        "coverage",
        "1 − |UNK ∩ P| / |P|",
        "Share of the period with measurements; unknown time (agent offline, meter "
        "unreachable) is never counted as off, so a gap is never mistaken for idleness.",
    ),
)

NOTES = (
    "Hours are measured by the instruments' agents, not self-reported.",
    "Unknown time lowers coverage and is never counted as off; read every rate with its coverage.",
    "An open interval counts until its agent was last heard from; later time is unknown.",
    "Ratios are null when their denominator is zero (no working time or no working day in P).",
)


def markdown() -> str:
    """The definitions as a Markdown section, for the OpenAPI description."""
    rows = "\n".join(f"- **{d.name}** = {d.formula}: {d.meaning}" for d in METRICS)
    notes = "\n".join(f"- {note}" for note in NOTES)
    return f"### Metric definitions\n\n{SETS}\n\n{rows}\n\n### Notes\n\n{notes}\n"

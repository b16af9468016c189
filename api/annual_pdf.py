"""The annual report as PDF: summary, per-instrument table, charts and definitions.

Instrument and institution names are often Chinese, so the text is set in a
CJK font embedded as a subset (Noto Sans CJK from Debian's fonts-noto-cjk,
which scripts/install-system-deps.sh installs; WenQuanYi Zen Hei also works).
fpdf2 embeds OpenType/CFF fonts, which ReportLab cannot. Charts are drawn
with plain rectangles: a bar per instrument is all an auditor needs, and it
keeps the report free of a plotting library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

from api import definitions
from api.annual import AnnualReport, InstrumentYear
from api.order_models import FLAG_DEFINITIONS
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.reconcile import DEFAULT_TOLERANCES, Flag

FONTS: Final = (
    # (path, index in the collection): Simplified Chinese face first.
    (Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"), 2),
    (Path("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc"), 2),
    (Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"), 0),
)
FONT: Final = "cjk"
FALLBACK: Final = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
"""For the set-theory signs of the definitions (∩, ⋃), which CJK fonts may lack."""
_BLUE = (52, 101, 164)
_GREY = (200, 200, 200)
_RED = (204, 0, 0)


def _font() -> tuple[Path, int]:
    for path, index in FONTS:
        if path.is_file():
            return path, index
    names = ", ".join(str(path) for path, _ in FONTS)
    raise ConfigError(f"no CJK font for PDF reports (looked for {names}); install fonts-noto-cjk")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


class _Document(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(format="A4")
        self.title_text = title
        path, index = _font()
        self.add_font(FONT, fname=path, collection_font_number=index)
        if FALLBACK.is_file():
            self.add_font("fallback", fname=FALLBACK)
            self.set_fallback_fonts(["fallback"])
        self.set_auto_page_break(auto=True, margin=15)
        self.set_title(title)
        self.set_creator("Instrumetry")

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.cell(0, 5, f"{self.title_text} · {self.page_no()}", align="C")

    def heading(self, text: str) -> None:
        self.set_font(FONT, size=13)
        self.cell(0, 9, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, size=9)

    def line_text(self, text: str) -> None:
        self.multi_cell(0, 5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _summary(doc: _Document, report: AnnualReport) -> None:
    rows = report.rows
    scheduled = sum(r.usage.scheduled_h for r in rows)
    on = sum(r.usage.on_scheduled_h for r in rows)
    effective = sum(r.usage.effective_h for r in rows)
    external = sum(r.usage.external_h for r in rows)
    quota = sum(r.quota_h for r in rows)
    period_h = sum(r.usage.period_h for r in rows)
    unknown = sum(r.usage.unknown_h for r in rows)
    flags = report.flag_totals
    facts = [
        ("仪器数 Instruments", str(len(rows))),
        ("开机率 Startup rate", _pct(on / scheduled if scheduled else None)),
        ("有效工作机时 Effective hours", f"{effective:,.1f} h"),
        ("定额机时 Quota", f"{quota:,.1f} h ({_pct(effective / quota if quota else None)})"),
        ("对外服务机时 External service hours", f"{external:,.1f} h"),
        ("共享率 Sharing rate", _pct(external / effective if effective else None)),
        ("数据覆盖率 Coverage", _pct(1 - unknown / period_h if period_h else None)),
        ("服务订单 Service orders", str(sum(r.orders for r in rows))),
        ("核对标记 Reconciliation flags", ", ".join(f"{f.value} {flags[f]}" for f in Flag)),
    ]
    doc.heading("概要 Summary")
    with doc.table(
        col_widths=(70, 110), text_align=("LEFT", "RIGHT"), first_row_as_headings=False
    ) as table:
        for label, value in facts:
            table.row([label, value])


def _table(doc: _Document, rows: Sequence[InstrumentYear]) -> None:
    doc.heading("各仪器 Instruments")
    doc.set_font(FONT, size=7)
    header = ("仪器 ID", "名称 Name", "开机率", "有效机时 h", "定额 h", "有效/定额",
              "对外 h", "共享率", "覆盖率", "标记 Flags")  # fmt: skip
    widths = (22, 40, 14, 17, 14, 15, 14, 14, 14, 26)
    headings = FontFace(emphasis="", fill_color=(230, 230, 230))
    with doc.table(col_widths=widths, text_align="LEFT", headings_style=headings) as table:
        table.row(header)
        for r in rows:
            u = r.usage
            marks = " ".join(f"{f.value}×{r.flags[f]}" for f in Flag if r.flags[f])
            table.row([
                r.instrument.id, r.instrument.name, _pct(u.startup_rate), f"{u.effective_h:.1f}",
                f"{r.quota_h:.0f}", _pct(r.effective_vs_quota), f"{u.external_h:.1f}",
                _pct(u.sharing_rate), _pct(u.coverage), marks,
            ])  # fmt: skip
    doc.set_font(FONT, size=9)


def _bars(
    doc: _Document,
    title: str,
    rows: Sequence[InstrumentYear],
    *,
    value: Callable[[InstrumentYear], float],
    label: Callable[[InstrumentYear], str],
    scale: float,
    marker: Callable[[InstrumentYear], float] | None = None,
) -> None:
    """A horizontal bar per instrument; ``marker`` draws a red tick (e.g. the quota)."""
    height = 5.0
    doc.ln(3)
    if doc.get_y() + 10 + 3 * height > doc.page_break_trigger:
        doc.add_page()
    doc.heading(title)
    left, width = doc.l_margin + 45, 110.0
    for row in rows:
        if doc.get_y() + height > doc.page_break_trigger:
            doc.add_page()
        y = doc.get_y()
        doc.set_xy(doc.l_margin, y)
        doc.cell(44, height, _fit(doc, f"{row.instrument.id} {row.instrument.name}", 43))
        doc.set_fill_color(*_GREY)
        doc.rect(left, y + 0.8, width, height - 1.6, style="F")
        doc.set_fill_color(*_BLUE)
        length = min(max(value(row) / scale, 0.0), 1.0) * width if scale else 0.0
        doc.rect(left, y + 0.8, length, height - 1.6, style="F")
        if marker is not None and scale:
            doc.set_draw_color(*_RED)
            x = left + min(marker(row) / scale, 1.0) * width
            doc.line(x, y, x, y + height)
            doc.set_draw_color(0, 0, 0)
        doc.set_xy(left + width + 2, y)
        doc.cell(30, height, label(row), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _fit(doc: _Document, text: str, width_mm: float) -> str:
    """``text`` shortened with an ellipsis to fit ``width_mm`` in the current font."""
    if doc.get_string_width(text) <= width_mm:
        return text
    while text and doc.get_string_width(text + "…") > width_mm:
        text = text[:-1]
    return text + "…"


def _flag_chart(doc: _Document, report: AnnualReport) -> None:
    totals = report.flag_totals
    top = max([*totals.values(), 1])
    if doc.get_y() + 10 + 6 * len(Flag) > doc.page_break_trigger:
        doc.add_page()
    doc.heading("核对标记 Reconciliation flags (orders)")
    for flag in Flag:
        y = doc.get_y()
        doc.cell(44, 6, flag.value)
        doc.set_fill_color(*_RED)
        doc.rect(doc.l_margin + 45, y + 1, 110 * totals[flag] / top, 4, style="F")
        doc.set_xy(doc.l_margin + 157, y)
        doc.cell(20, 6, str(totals[flag]), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def render_pdf(report: AnnualReport) -> bytes:
    """The report as a PDF document."""
    name = report.institution.name
    doc = _Document(f"{name} {report.year} 年度仪器使用报告")
    doc.add_page()
    doc.set_font(FONT, size=16)
    doc.multi_cell(0, 9, f"{name}\n{report.year} 年度大型仪器使用报告 Annual usage report",
                   new_x=XPos.LMARGIN, new_y=YPos.NEXT)  # fmt: skip
    doc.set_font(FONT, size=9)
    doc.line_text(
        f"Period {report.year}-01-01 to {report.year}-12-31, local days in "
        f"{report.institution.calendar.tz}. All hours are measured by the instruments' "
        "agents, not self-reported; unknown time is never counted as off, and coverage says "
        "how much of the year was measured."
    )
    doc.ln(2)
    _summary(doc, report)
    doc.ln(4)
    _table(doc, report.rows)
    rows = report.rows
    _bars(doc, "开机率 Startup rate", rows, value=lambda r: r.usage.startup_rate or 0.0,
          label=lambda r: _pct(r.usage.startup_rate), scale=1.0)  # fmt: skip
    top = max([r.usage.effective_h for r in rows] + [r.quota_h for r in rows] + [1.0])
    _bars(doc, "有效机时 vs 定额 (red: quota) Effective hours vs quota", rows,
          value=lambda r: r.usage.effective_h,
          label=lambda r: f"{r.usage.effective_h:.0f} / {r.quota_h:.0f} h",
          scale=top, marker=lambda r: r.quota_h)  # fmt: skip
    _bars(doc, "共享率 Sharing rate", rows, value=lambda r: r.usage.sharing_rate or 0.0,
          label=lambda r: _pct(r.usage.sharing_rate), scale=1.0)  # fmt: skip
    doc.ln(3)
    _flag_chart(doc, report)
    doc.add_page()
    doc.heading("定义 Definitions")
    doc.line_text(definitions.SETS)
    for d in definitions.METRICS:
        doc.line_text(f"{d.name} = {d.formula}: {d.meaning}")
    doc.line_text(
        "sharing_rate = external_h / effective_h; external_h = |E ∩ P ∩ ⋃ windows of external "
        "service orders|; quota: 1,400 h general / 800 h specialised per year (定额机时), "
        "1,200 h/year counts as fully booked."
    )
    doc.line_text("Reconciliation of each service order with its booked window [s, e]:")
    for flag, meaning in FLAG_DEFINITIONS.items():
        doc.line_text(f"{flag.value}: {meaning}")
    tolerances = DEFAULT_TOLERANCES
    doc.line_text(
        f"Tolerances: inflation_factor {tolerances.inflation_factor}, inflation_slack_h "
        f"{tolerances.inflation_slack_h}, min_coverage {tolerances.min_coverage}, "
        f"max_overlap_min {tolerances.max_overlap.total_seconds() / 60:g}."
    )
    return bytes(doc.output())

"""Instrument archetypes: power levels and usage habits, as data.

The figures are typical of the instrument kinds a city sharing platform
lists; they make the simulated fleet recognisable, not a model of any one
vendor's device. Power levels are what a meter on the mains feed would read.
"""

from __future__ import annotations

from dataclasses import dataclass

from instrumetry.domain.classify import Thresholds
from instrumetry.domain.registry import Category


@dataclass(frozen=True, slots=True)
class Archetype:
    """How one kind of instrument draws power and gets used."""

    kind: str
    name: str  # as the platform lists it
    model: str
    category: Category
    standby_w: float  # powered, idle
    running_w: float  # measuring
    thresholds: Thresholds
    always_on: bool = False  # e.g. an NMR console is never switched off
    sessions_per_day: tuple[int, int] = (0, 3)
    run_hours: tuple[float, float] = (0.5, 3.0)
    prep_minutes: tuple[float, float] = (5, 40)
    post_minutes: tuple[float, float] = (5, 30)
    overnight_run_chance: float = 0.0  # a working day's last run goes on overnight
    left_on_chance: float = 0.05  # nobody switches it off at the end of the day


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        "nmr",
        "600兆核磁共振波谱仪",
        "Bruker AVANCE NEO 600",
        Category.SPECIALISED,
        900,
        1600,
        Thresholds(standby_w=200, run_w=1250, hysteresis_w=60),
        always_on=True,
        sessions_per_day=(2, 5),
        run_hours=(0.5, 4),
        overnight_run_chance=0.3,
    ),
    Archetype(
        "sem",
        "场发射扫描电子显微镜",
        "ZEISS Sigma 300 SEM",
        Category.SPECIALISED,
        600,
        1800,
        Thresholds(standby_w=150, run_w=1200, hysteresis_w=50),
        sessions_per_day=(1, 3),
        run_hours=(1, 3),
    ),
    Archetype(
        "lcms",
        "液相色谱-质谱联用仪",
        "Agilent 6546 LC/Q-TOF",
        Category.SPECIALISED,
        700,
        2200,
        Thresholds(standby_w=150, run_w=1400, hysteresis_w=60),
        sessions_per_day=(1, 2),
        run_hours=(2, 6),
        overnight_run_chance=0.25,
    ),
    Archetype(
        "xrd",
        "X射线衍射仪",
        "Rigaku SmartLab XRD",
        Category.GENERAL,
        400,
        3500,
        Thresholds(standby_w=100, run_w=2000, hysteresis_w=80),
        sessions_per_day=(1, 4),
        run_hours=(0.3, 2),
    ),
    Archetype(
        "confocal",
        "激光共聚焦显微镜",
        "Leica STELLARIS 5",
        Category.GENERAL,
        150,
        650,
        Thresholds(standby_w=40, run_w=400, hysteresis_w=20),
        sessions_per_day=(0, 3),
        run_hours=(0.5, 3),
    ),
    Archetype(
        "pcr",
        "实时荧光定量PCR仪",
        "Bio-Rad CFX96 qPCR",
        Category.GENERAL,
        30,
        420,
        Thresholds(standby_w=10, run_w=200, hysteresis_w=5),
        sessions_per_day=(0, 4),
        run_hours=(1.5, 2.5),
        prep_minutes=(2, 15),
        post_minutes=(2, 10),
    ),
    Archetype(
        "general",
        "十万分之一分析天平",
        "Mettler Toledo XPR balance",
        Category.GENERAL,
        12,
        45,
        Thresholds(standby_w=4, run_w=25, hysteresis_w=2),
        sessions_per_day=(0, 6),
        run_hours=(0.1, 1),
        left_on_chance=0.3,
    ),
)

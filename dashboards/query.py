"""A PostgreSQL panel query for the Grafana foundation SDK, which ships none.

The SDK (11.6) has typed query models for Prometheus, Loki, testdata and
others, but not for Grafana's built-in SQL datasources; its ``Dataquery``
base class is the extension point for exactly this. Besides what Grafana
reads (``rawSql``, ``format``), a query carries the columns its panel needs,
which the tests check against the real database; those are not serialised.
"""

from __future__ import annotations

from typing import Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

DATASOURCE = dashboard.DataSourceRef(type_val="grafana-postgresql-datasource", uid="instrumetry-pg")
"""The database datasource that ``provisioning/datasources/instrumetry.yaml`` creates."""

PROMETHEUS = dashboard.DataSourceRef(type_val="prometheus", uid="instrumetry-prom")
"""The same file's Prometheus, which scrapes the collector's ``/metrics``."""

Format = Literal["table", "time_series"]


class SqlQuery(cogvariants.Dataquery):
    """One ``rawSql`` target of a panel, and the columns its result must have."""

    def __init__(self, sql: str, columns: tuple[str, ...], format_: Format, ref_id: str) -> None:
        self.sql = sql
        self.columns = columns
        self.format = format_
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": DATASOURCE.to_json(),
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.sql,
            "refId": self.ref_id,
        }


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builds a ``SqlQuery``: ``Sql(sql).columns("time", "value").time_series()``."""

    def __init__(self, sql: str) -> None:
        self._query = SqlQuery(sql.strip(), (), "table", "A")

    def build(self) -> SqlQuery:
        return self._query

    def columns(self, *names: str) -> Self:
        """The columns the panel reads, in order; a time series starts with ``time``."""
        self._query.columns = names
        return self

    def time_series(self) -> Self:
        self._query.format = "time_series"
        return self

    def ref_id(self, ref_id: str) -> Self:
        self._query.ref_id = ref_id
        return self

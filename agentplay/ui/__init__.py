"""Seeing a run: the `agentplay ui` web app and static `agentplay report` pages.

Both read a trace store read-only (safe next to a run that is writing) and
draw the same charts: per-role mean reward, the recipe's headline metrics,
dropped-group fraction, proposal diversity and the step time split.
"""

from ._app import create_app
from ._report import ReportResult, write_report
from ._series import Chart, ChartSet, Series, SeriesCache, distinct_n

__all__ = [
    "Chart",
    "ChartSet",
    "ReportResult",
    "Series",
    "SeriesCache",
    "create_app",
    "distinct_n",
    "write_report",
]

"""Report: a quarter's or a range's outputs in (themes, names, the firm × theme panel and its
evidence sentences, and for a range `trends/RANGE/`), one self-contained HTML page out
(`reports/LABEL.html`); or a measured subject's (`measures/NAME/`), its page out
(`reports/measure-NAME.html`). Start with `report.py` (the stage); `content.py` and `measure.py`
read what the pages show, `page.py` writes a page from `assets/`."""

from ftm.report.report import (
    MeasureReportResult,
    ReportProgress,
    ReportResult,
    report_measure,
    report_quarters,
)

__all__ = ["MeasureReportResult", "ReportProgress", "ReportResult", "report_measure", "report_quarters"]

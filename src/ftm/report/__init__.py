"""Report: a quarter's or a range's outputs in (themes, names, the firm × theme panel and its
evidence sentences, and for a range `trends/RANGE/`), one self-contained HTML page out
(`reports/LABEL.html`). Start with `report.py` (the stage); `content.py` reads what the page
shows, `page.py` writes the page from `assets/`."""

from ftm.report.report import ReportProgress, ReportResult, report_quarters

__all__ = ["ReportProgress", "ReportResult", "report_quarters"]

"""Trends: a range of reduced quarters in (`themes/NAME/quarter=Q/` and the prefetched sentences'
text); themes followed through time out (`trends/RANGE/`: lineages, the firm × theme × quarter panel with
Loughran-McDonald tone, and one row per lineage and quarter with its trend), with the lineage
registry that keeps ids stable (`trends/_lineages.json`). Start with `trends.py`; `lineages.py`
matches themes across quarters, `measured.py` measures each lineage in every quarter; tone
words are counted by `ftm.tone`."""

from ftm.trends.trends import TrendsProgress, TrendsResult, firm_theme_tone, trends_range

__all__ = ["TrendsProgress", "TrendsResult", "firm_theme_tone", "trends_range"]

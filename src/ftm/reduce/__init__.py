"""Reduce: a quarter's firm topics in (the part files the map's checkpoints list); cross-firm
themes, their topics and the firm x theme exposure panel out (`themes/quarter=Q/`).
Start with `themes.py`."""

from ftm.reduce.themes import ReduceProgress, ReduceResult, reduce_quarter

__all__ = ["ReduceProgress", "ReduceResult", "reduce_quarter"]

"""Reduce: a quarter's mapped sentences in (the sentence embeddings the map's checkpoints list, with
the prefetch's words); the themes many firms talk about, their sentences, their firm topics and the
firm x theme exposure panel out (`themes/NAME/quarter=Q/`). Start with `themes.py`; `clustering.py`
finds the themes, `kinds.py` tells reporting language apart."""

from ftm.reduce.themes import ReduceProgress, ReduceResult, reduce_quarter

__all__ = ["ReduceProgress", "ReduceResult", "reduce_quarter"]

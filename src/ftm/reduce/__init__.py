"""Reduce: a quarter's mapped sentences in (the sentence embeddings the map's checkpoints list, with
the prefetch's words); the themes many firms talk about, their sentences, their firm topics and the
firm x theme exposure panel out (`themes/NAME/quarter=Q/`). Start with `themes.py`; `clustering.py`
finds the themes, `kinds.py` tells reporting language apart."""

from ftm.reduce.clustering import mean_embedding
from ftm.reduce.sentences import QuarterSentences, read_firm_keys, read_sentences, texts_of
from ftm.reduce.themes import ReduceProgress, ReduceResult, mapped_state, reduce_quarter

__all__ = [
    "QuarterSentences",
    "ReduceProgress",
    "ReduceResult",
    "mapped_state",
    "mean_embedding",
    "read_firm_keys",
    "read_sentences",
    "reduce_quarter",
    "texts_of",
]

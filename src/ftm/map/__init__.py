"""Map: one batch of a quarter's plan (`ftm.plan`) in, its firms' prefetched sentences read; each
firm's topics out (`intermediate/firm-topics/`), with the batch's checkpoint, failures and progress
(`progress/`). Start with `batch.py` (one batch); `records.py` is how everyone reads those records."""

from ftm.map import records
from ftm.map.batch import BatchResult, MapProgress, run_batch
from ftm.map.embedding import Embedder, resolve_device
from ftm.map.records import read_checkpoint, read_failures

__all__ = [
    "BatchResult",
    "Embedder",
    "MapProgress",
    "read_checkpoint",
    "read_failures",
    "records",
    "resolve_device",
    "run_batch",
]

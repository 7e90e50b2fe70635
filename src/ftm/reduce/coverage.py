"""Which firms of the quarter the panel covers, and why the others are not in it: one row per
firm the prefetch kept or skipped (`themes/firms/quarter=Q/firms.parquet`). The panel holds a row only
where a firm has sentences in a theme, so this table is its denominator: a firm absent from the
panel is here with its status and the reason the prefetch or the map recorded.

Statuses, the first that holds:

- `exposed`: it has sentences in at least one theme (it is in the panel);
- `failed`: the map failed on it (the reason is its error);
- `no_theme`: the map embedded its sentences, none is in a theme;
- `skipped`: the prefetch found no usable sentence, or the map kept none of it (the reason says);
- `not_mapped`: its batch had not finished (a reduce with `--allow-partial`).

A firm the map skipped for its topics (too small, all outliers) still has its sentences embedded
and can be `exposed` or `no_theme`; the reason then says why it has no topics.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ftm.map import read_checkpoint, read_failures
from ftm.plan import read_plan
from ftm.quarters import Quarter
from ftm.reduce.sentences import QuarterSentences
from ftm.schemas import FIRMS, PrefetchManifest
from ftm.storage import Store


def firms_table(
    store: Store,
    quarter: Quarter,
    manifest: PrefetchManifest,
    sentences: QuarterSentences,
    n_themes: np.ndarray,
    metadata: dict[bytes, bytes],
) -> pa.Table:
    """The FIRMS table; `n_themes[i]` is the number of themes of `sentences.firm_ids[i]`."""
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    batch_of: dict[str, str] = {}
    for batch in read_plan(store, quarter) or []:
        batch_of.update(dict.fromkeys(batch.firm_ids, batch.batch_id))
        checkpoint = read_checkpoint(store, quarter, batch.batch_id)
        if checkpoint is None:
            continue
        skipped.update({skip.firm_id: skip.reason for skip in checkpoint.skipped_firms})
        failures = read_failures(store, quarter, batch.batch_id)
        reasons = {failure.firm_id: f"{failure.error_type}: {failure.message}" for failure in failures}
        failed.update({firm: reasons.get(firm, "failed in the map") for firm in checkpoint.failed_firm_ids})
    themes_of = dict(zip(sentences.firm_ids, n_themes.tolist(), strict=True))
    prefetch_skipped = {skip.firm_id: skip.reason for skip in manifest.skipped_firms}

    rows = []
    for firm_id in sorted(set(manifest.firm_to_chunk) | set(prefetch_skipped)):
        keys = sentences.firms.get(firm_id)
        count = themes_of.get(firm_id, 0)
        if firm_id in prefetch_skipped and firm_id not in manifest.firm_to_chunk:
            status, reason = "skipped", f"prefetch: {prefetch_skipped[firm_id]}"
        elif count:
            status, reason = "exposed", _map_reason(skipped.get(firm_id))
        elif firm_id in failed:
            status, reason = "failed", failed[firm_id]
        elif firm_id in themes_of:
            status, reason = "no_theme", _map_reason(skipped.get(firm_id))
        elif firm_id in skipped:
            status, reason = "skipped", _map_reason(skipped[firm_id])
        else:
            batch = batch_of.get(firm_id)
            status, reason = "not_mapped", f"its batch {batch} had not finished" if batch else "in no batch"
        rows.append((firm_id, keys, count, status, reason))
    columns = {
        "quarter": pa.array([str(quarter)] * len(rows), pa.string()),
        "firm_id": pa.array([row[0] for row in rows], pa.string()),
        "firm_name": pa.array([row[1].firm_name if row[1] else None for row in rows], pa.string()),
        "permno": pa.array([row[1].permno if row[1] else None for row in rows], pa.int64()),
        "gvkey": pa.array([row[1].gvkey if row[1] else None for row in rows], pa.string()),
        "earnings_call_date": pa.array(
            [row[1].earnings_call_date if row[1] else None for row in rows], pa.date32()
        ),
        "n_sentences": pa.array([row[1].n_sentences if row[1] else 0 for row in rows], pa.int32()),
        "n_themes": pa.array([row[2] for row in rows], pa.int32()),
        "status": pa.array([row[3] for row in rows], pa.string()),
        "reason": pa.array([row[4] for row in rows], pa.string()),
    }
    return pa.table(columns, schema=FIRMS.with_metadata(metadata))


def _map_reason(reason: str | None) -> str | None:
    return f"map: {reason}" if reason else None

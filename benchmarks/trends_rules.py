"""Lineage threshold rules, offline: the three event lineages of a `benchmarks/trends.py` run
recomputed from the stored embeddings under other thresholds (Spearman against the share of firms
exposed, and the largest gap in 2020), the measurement behind benchmarks/README.md's *Measured
lineage series*. Needs the run's root and its `--json` output.

    .venv/bin/python benchmarks/trends_rules.py /tmp/ftm-bench-trends /tmp/trends-bench.json
"""

import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ftm.measures import centred_similarities, nearest_median
from ftm.quarters import parse_quarters
from ftm.reduce import mean_embedding
from ftm.storage import Store
from ftm.trends.lineages import read_quarter_themes, read_registry
from ftm.trends.measured import _sentences, lineage_queries

store = Store(sys.argv[1])
qs = parse_quarters("2020Q1..2022Q1")
found = {q: read_quarter_themes(store, q) for q in qs}
reg = read_registry(store, 0.8)
entries = {e.quarter: e for e in reg.quarters}
Q = lineage_queries(found, entries)
r = json.loads(Path(sys.argv[2]).read_text())
events = {e: (v["lineage_id"], v["series"]["exposed_share"]) for e, v in r["events"].items()}
rows = [Q.lineage_ids.index(lineage) for lineage, _ in events.values()]
sims = {}
firms = {}
nfirms = {}
for q in qs:
    s = _sentences(store, q)
    m = mean_embedding(s.embeddings)
    sims[q] = centred_similarities(s.embeddings, m, Q.vectors[rows])
    firms[q] = s.firm
    nfirms[q] = len(s.firms)
home = {q: dict(Q.home[q]) for q in qs}


def evaluate(name, thr):
    out = []
    for j, (e, (_, truth)) in enumerate(events.items()):
        share = []
        for q in qs:
            sel = sims[q][:, j] >= thr[j]
            c = np.bincount(firms[q][sel], minlength=firms[q].max() + 1)
            share.append((c >= 2).sum() / nfirms[q])
        rho = spearmanr(share, truth).statistic
        gap = max(abs(a - b) for a, b, q in zip(share, truth, qs, strict=True) if q.year == 2020)
        out.append(f"{e}: rho {rho:.3f} gap {gap:.3f}")
    print(name, " | ".join(out))


def medians(k=50):
    res = []
    for j, row in enumerate(rows):
        ms = [nearest_median(sims[q][:, j], min(k, home[q][row])) for q in qs if row in home[q]]
        res.append(np.mean(ms))
    return np.array(res)


med = medians()
for rel in (0.6, 0.7, 0.8, 0.9):
    evaluate(f"rel {rel}", rel * med)
for k in (200, 500):
    evaluate(f"k {k} rel 0.6", 0.6 * medians(k))
# fixed quantile of home quarter sims: the theme's share of sentences
sizes = {}
for q in qs:
    t = found[q].table
    lid = [entries[str(q)].lineage_of_theme[str(x)] for x in t.column("theme_id").to_pylist()]
    sizes[q] = dict(zip(lid, t.column("n_sentences").to_pylist(), strict=True))


def quantile_thr(agg):
    res = []
    for j, (lineage, _) in enumerate(events.values()):
        ts = []
        for q in qs:
            if lineage in sizes[q]:
                col = np.sort(sims[q][:, j])[::-1]
                ts.append(col[min(sizes[q][lineage], len(col)) - 1])
        res.append(agg(ts))
    return np.array(res)


evaluate("size-matched mean", quantile_thr(np.mean))
evaluate("size-matched median", quantile_thr(np.median))
evaluate("size-matched max", quantile_thr(np.max))
print(quantile_thr(np.mean), 0.6 * med)

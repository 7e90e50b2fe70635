"""Salience: how far above its ordinary level a quarter's attention to a theme is.

A researcher opens a quarter's themes to see what firms talked about *this* quarter, so themes are
ranked by unusual attention, not by size: margins, customers and cash flow are discussed by every
firm every quarter, and are not news however many firms discuss them.

The measure rests on a reference of ordinary attention shipped with ftm (`ordinary_attention.npz`,
written by scripts/ordinary_attention.py from real calls of every quarter of 2015 to 2022 that the
test corpus has enough calls of, every call counted the same): a codebook of small cells of
sentences, each with its mean embedding and its share of each reference quarter's attention.

- **The theme's cells**: each cell goes to the quarter's theme whose centroid is nearest to it (in
  the centred embedding space, see clustering.py).
- **Attention this quarter** (`attention_share`): each of the quarter's sentences falls in its
  nearest cell; a firm's attention to a theme is the share of its sentences in the theme's cells,
  and the quarter's is the mean over its firms, so that every call counts the same.
- **Language the reference has no cell for**: a sentence nearer to one of the quarter's themes than
  to every reference cell counts for that theme itself. Without this, a subject new since the
  reference was built fell in cells that belong to older themes, and its own theme got no
  attention at all: a brake-sensor recall planted in ten firms' calls came out at salience 0 with
  fp32 embeddings. About a quarter of an ordinary quarter's sentences are such (25 to 30 % of
  2020Q3 and 2021Q3 of the test corpus), and the ranks of those quarters and of the bundled 2016Q4
  sample hardly moved: their subjects do have cells.
- **Ordinary attention** (`baseline_share`): the reference quarters' shares of the theme's cells,
  and their **median**. A median over many years is robust to the few quarters of any one event:
  the pandemic drew attention in 10 of the 25 reference quarters, and its ordinary level stays that
  of the others. A mean over recent quarters would make a lasting subject ordinary within a year.
- **Salience** = ln((attention_share + s) / (baseline_share + s)), s = `reduce.salience_smoothing`:
  a share of attention added to both sides, so that a small theme whose ordinary share is nearly
  zero does not lead by a ratio of two tiny numbers. 0 is ordinary; ln 2 is twice the ordinary
  attention.

Both sides are measured through the same cells, so they differ only in where the attention went.
Measured sentence by sentence, the quarter's side came out far above the cells' (a cell's mean is
nearer to specific themes than its sentences are one by one), and broad themes looked salient in
an ordinary quarter: 24 of 129 themes of the bundled 2016Q4 sample at twice their ordinary level,
against 11 through the cells.

Industry mix. The reference mixes the industries of about 600 calls over eight years, so a quarter
whose sample leans to one industry can show that industry's ordinary subjects as salient; the kind
rule (kinds.py) keeps subjects that only some firms discuss from counting as routine, and
`share_of_firms` says how widely a theme is discussed. Within-firm baselines, from earlier
quarters of the same firms, are the next step.

Nothing here names a subject or a quarter, and the reference is built by a documented script from
every quarter the corpus has enough calls of, not from chosen ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftm.reduce.references import shipped

_REFERENCE = "ordinary_attention.npz"
# Sentences compared with the cells and themes at once: bounds memory, since the block's cosines
# to 1,500 cells and some hundred themes are about 2,000 floats a sentence (16,384 rows: 130 MB;
# 65,536 rows put 0.4 GB on the reduce's peak at 2,000,000 sentences).
_BLOCK_ROWS = 1 << 14


@dataclass(frozen=True)
class OrdinaryAttention:
    """The reference of ordinary attention: cells of sentences and their share of each quarter."""

    model: str
    cells: np.ndarray  # float32 (cells, dimensions): each cell's mean embedding, as stored
    mass: np.ndarray  # float32 (cells, quarters): each cell's share of each quarter's attention
    quarters: list[str]


def load_ordinary_attention() -> OrdinaryAttention | None:
    """The reference shipped with ftm, or None if the file is missing (a stripped install)."""
    arrays = shipped(_REFERENCE)
    if arrays is None:
        return None
    return OrdinaryAttention(
        model=str(arrays["model"]),
        cells=arrays["cells"].astype(np.float32),
        mass=arrays["mass"].astype(np.float32),
        quarters=[str(quarter) for quarter in arrays["quarters"]],
    )


def nearest(vectors: np.ndarray, mean: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row of `vectors` (embeddings as stored) its nearest of `centroids` (unit rows in the
    centred space): the centroid with the highest cosine to the row less `mean`, a block at a time
    (the first of equals)."""
    found = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), _BLOCK_ROWS):
        block = vectors[start : start + _BLOCK_ROWS].astype(np.float32) - mean
        # Every row's norm is positive after centring unless it is the mean itself; the argmax of
        # cosines does not need the rows' lengths.
        found[start : start + len(block)] = np.argmax(block @ centroids.T, axis=1)
    return found


def attention(
    embeddings: np.ndarray,
    firm: np.ndarray,
    n_firms: int,
    mean: np.ndarray,
    centroids: np.ndarray,
    reference: OrdinaryAttention,
) -> tuple[np.ndarray, np.ndarray]:
    """Each theme's attention this quarter and its ordinary attention (see the module docstring):
    `embeddings` as stored, `firm` per sentence, `centroids` unit rows in the centred space."""
    cells = reference.cells - mean
    cells /= np.maximum(np.linalg.norm(cells, axis=1, keepdims=True), 1e-12)
    theme_of_cell = np.argmax(cells @ centroids.T, axis=1)
    # One pass over the sentences, each to the nearest of the cells and the themes: a sentence
    # nearer to a theme of this quarter than to every reference cell is language the reference has
    # no cell for, and counts for that theme itself, not for its nearest cell's (cells first, so
    # a tie goes to the cell).
    theme_of = np.concatenate([theme_of_cell, np.arange(len(centroids))])
    theme = theme_of[nearest(embeddings, mean, np.concatenate([cells, centroids]))]
    per_firm = np.bincount(firm, minlength=n_firms).astype(np.float64)
    weights = 1.0 / per_firm[firm]  # each firm's sentences add up to 1
    firms_present = max(int((per_firm > 0).sum()), 1)
    share = np.bincount(theme, weights=weights, minlength=len(centroids)) / firms_present
    per_quarter = np.zeros((len(centroids), reference.mass.shape[1]))
    np.add.at(per_quarter, theme_of_cell, reference.mass)
    return share, np.median(per_quarter, axis=1)


def salience(share: np.ndarray, baseline: np.ndarray, smoothing: float) -> np.ndarray:
    """ln((share + s) / (baseline + s)): 0 at the ordinary level, ln 2 at twice it."""
    return np.log((share + smoothing) / (baseline + smoothing))

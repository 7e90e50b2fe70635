"""The reduce's clustering on its own: the inverted-file assignment of sentences to cells (taken
above 2³⁰ sentences × cells, so never at the sizes other tests reach) agrees with the exact one
when forced on a small quarter; the cells' sums are their sentences' sums; word vectors are unit
rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ftm.reduce import clustering


def _vectors(n_subjects: int = 40, per_subject: int = 150, seed: int = 7) -> clustering.Vectors:
    """Sentences around `n_subjects` directions, as unit float16 rows the way the map stores them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_subjects, 64))
    rows = np.repeat(centres, per_subject, axis=0) + 0.35 * rng.normal(size=(n_subjects * per_subject, 64))
    embeddings = clustering.unit(rows).astype(np.float16)
    mean = embeddings.astype(np.float32).mean(axis=0)
    return clustering.Vectors(embeddings, mean, None, 0.0)


def test_the_inverted_file_assignment_agrees_with_the_exact_one(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = _vectors()
    k = 60
    exact = clustering.micro_clusters(vectors, k, 3, lambda done, total: None)
    monkeypatch.setattr(clustering, "_EXACT_ASSIGNMENT_LIMIT", 0)  # every quarter takes the IVF path
    approximate = clustering.micro_clusters(vectors, k, 3, lambda done, total: None)
    assert approximate.cell.min() >= 0 and approximate.cell.max() < k  # every sentence has a cell
    assert np.mean(approximate.cell == exact.cell) >= 0.98
    # The IVF cell is the nearest cell it probed: never closer than the exact nearest one.
    block = vectors.block(0, vectors.n)
    centres = clustering.unit(exact.sums)
    best = (block @ centres.T).max(axis=1)
    chosen = np.einsum("ij,ij->i", block, centres[approximate.cell])
    assert np.all(chosen <= best + 1e-5)


def test_cell_sums_and_sizes_are_those_of_their_sentences() -> None:
    vectors = _vectors(n_subjects=12, per_subject=80)
    cells = clustering.micro_clusters(vectors, 20, 5, lambda done, total: None)
    block = vectors.block(0, vectors.n)
    expected = np.zeros((20, vectors.dimensions))
    np.add.at(expected, cells.cell, block)
    np.testing.assert_allclose(cells.sums, expected, atol=1e-3)
    assert cells.sizes.tolist() == np.bincount(cells.cell, minlength=20).tolist()
    assert cells.sizes.sum() == vectors.n


def test_word_vectors_are_unit_rows_made_in_place() -> None:
    rng = np.random.default_rng(1)
    counts = sp.random(500, 300, density=0.03, random_state=2, format="csr", dtype=np.float32)
    counts.data[:] = rng.integers(1, 3, size=counts.nnz)
    words = clustering._word_vectors(counts, 20, seed=0)
    assert words.dtype == np.float16 and words.shape == (500, 20)  # as the embeddings are stored
    np.testing.assert_allclose(np.linalg.norm(words.astype(np.float32), axis=1), 1.0, atol=2e-3)
    # Centred: the mean word vector is near zero, not the shared direction of every sentence.
    assert np.linalg.norm(words.astype(np.float32).mean(axis=0)) < 0.1
